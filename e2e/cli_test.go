package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func TestVersionCommand(t *testing.T) {
	out, code := run(t, 30*time.Second, ".", bridgeBin(t), "version")
	if code != 0 || !strings.HasPrefix(out, "bridge ") {
		t.Fatalf("exit %d: %q", code, out)
	}
}

func TestCheckShippedConfig(t *testing.T) {
	out, code := run(t, 30*time.Second, "..", bridgeBin(t), "check")
	if code != 0 || !strings.Contains(out, "config.toml: ok") {
		t.Fatalf("bridge check on the shipped config.toml: exit %d\n%s", code, out)
	}
}

func TestCheckBadConfigExitsOne(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte("[mqtt]\nbroker = \"gopher://x\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, 30*time.Second, dir, bridgeBin(t), "check")
	if code != 1 || !strings.Contains(out, "config.toml:2: mqtt.broker: unsupported scheme") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// TestSIGTERMExitsCleanly runs the bridge and checks that SIGTERM ends it
// with exit code 0 well within the 5 s budget.
func TestSIGTERMExitsCleanly(t *testing.T) {
	dir := t.TempDir()
	httpPort := peer.FreeTCPPort(t)
	cfg := fmt.Sprintf(`rules = []
[coap]
listen = "127.0.0.1:%d"
[mqtt.embedded]
listen = "127.0.0.1:%d"
[http]
listen = "127.0.0.1:%d"
`, peer.FreeUDPPort(t), peer.FreeTCPPort(t), httpPort)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, dir, nil, bridgeBin(t), "run")
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPort)
	testkit.Eventually(t, 20*time.Second, "the health endpoint", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	began := time.Now()
	if code := p.stop(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\n%s", code, p.out.String())
	}
	t.Logf("exited %v after SIGTERM", time.Since(began).Round(time.Millisecond))
}
