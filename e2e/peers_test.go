package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// bridgeProc is a running bridge binary with its ports.
type bridgeProc struct {
	*proc
	dir      string
	coapPort int
	dtlsPort int
	mqttPort int // embedded broker, or the remote broker's port
	httpPort int
}

// bridgeSetup configures startBridgeBin.
type bridgeSetup struct {
	rules  string   // rule file text (rules/e2e.toml)
	broker string   // "" = embedded on a free port; else a tcp:// URL
	extra  string   // appended to config.toml (more [coap.dtls] keys, ...)
	dtls   bool     // open a coaps listener
	env    []string // extra environment, e.g. BRIDGE_COAP_RATE_LIMIT=100
}

// startBridgeBin writes a config and rule file in a temp dir and runs the
// bridge binary there, waiting for /readyz.
func startBridgeBin(t *testing.T, s bridgeSetup) *bridgeProc {
	t.Helper()
	b := &bridgeProc{dir: t.TempDir(), coapPort: peer.FreeUDPPort(t), httpPort: peer.FreeTCPPort(t)}
	broker := s.broker
	if broker == "" {
		b.mqttPort = peer.FreeTCPPort(t)
		broker = "embedded"
	} else {
		i := strings.LastIndexByte(broker, ':')
		b.mqttPort, _ = strconv.Atoi(broker[i+1:])
	}
	if err := os.Mkdir(filepath.Join(b.dir, "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	b.writeRules(t, s.rules)
	dtls := ""
	if s.dtls {
		b.dtlsPort = peer.FreeUDPPort(t)
		dtls = fmt.Sprintf("listen = \"127.0.0.1:%d\"\n", b.dtlsPort)
	}
	cfg := fmt.Sprintf(`rules = ["rules/*.toml"]
[coap]
listen = "127.0.0.1:%d"
[coap.dtls]
%s%s
[mqtt]
broker = %q
client_id = "e2e-bridge-%d"
[mqtt.embedded]
listen = "127.0.0.1:%d"
[http]
listen = "127.0.0.1:%d"
[log]
level = "debug"
`, b.coapPort, dtls, s.extra, broker, time.Now().UnixNano(), b.mqttPort, b.httpPort)
	if broker != "embedded" {
		cfg = strings.Replace(cfg, fmt.Sprintf("[mqtt.embedded]\nlisten = \"127.0.0.1:%d\"\n", b.mqttPort), "", 1)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	b.proc = start(t, b.dir, s.env, bridgeBin(t), "run")
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", b.httpPort), 20*time.Second)
	return b
}

func (b *bridgeProc) writeRules(t *testing.T, text string) {
	t.Helper()
	tmp := filepath.Join(b.dir, "rules", ".e2e.tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(b.dir, "rules", "e2e.toml")); err != nil {
		t.Fatal(err)
	}
}

func (b *bridgeProc) coapURL(path string) string {
	return fmt.Sprintf("coap://127.0.0.1:%d%s", b.coapPort, path)
}

// mqttSub is a mosquitto_sub process printing "topic payload" lines.
type mqttSub struct{ *proc }

// startSub runs mosquitto_sub on filter and returns once it is subscribed:
// it also subscribes a marker topic and waits to see a marker published.
func startSub(t *testing.T, port int, filter string) *mqttSub {
	t.Helper()
	return startSubFormat(t, port, filter, "-v")
}

// startSubFormat is startSub with mosquitto_sub's output options (-v, or
// -F with a format).
func startSubFormat(t *testing.T, port int, filter string, format ...string) *mqttSub {
	t.Helper()
	bin := peer.Require(t, "mosquitto_sub")
	pub := peer.Require(t, "mosquitto_pub")
	marker := fmt.Sprintf("e2e/ready/%d", time.Now().UnixNano())
	args := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-q", "1", "-t", filter, "-t", marker}, format...)
	p := start(t, ".", nil, bin, args...)
	testkit.Eventually(t, 10*time.Second, "mosquitto_sub subscribed", func() bool {
		run(t, 5*time.Second, ".", pub, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-t", marker, "-m", "x")
		return strings.Contains(p.out.String(), marker)
	})
	return &mqttSub{p}
}

// waitLine waits for an output line containing all of want.
func (s *mqttSub) waitLine(t *testing.T, d time.Duration, want ...string) string {
	t.Helper()
	var found string
	testkit.Eventually(t, d, fmt.Sprintf("mosquitto_sub line with %q", want), func() bool {
		for _, l := range strings.Split(s.out.String(), "\n") {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(l, w)
			}
			if ok {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

// count returns how many output lines start with topic.
func (s *mqttSub) count(topic string) int {
	n := 0
	for _, l := range strings.Split(s.out.String(), "\n") {
		if strings.HasPrefix(l, topic+" ") {
			n++
		}
	}
	return n
}

func mqttPub(t *testing.T, port int, topic, payload string, args ...string) {
	t.Helper()
	all := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-t", topic, "-m", payload}, args...)
	out, code := run(t, 10*time.Second, ".", peer.Require(t, "mosquitto_pub"), all...)
	if code != 0 {
		t.Fatalf("mosquitto_pub: exit %d: %s", code, out)
	}
}

// startMosquitto runs a broker on a free port for remote-broker tests.
func startMosquitto(t *testing.T) int {
	t.Helper()
	return peer.StartMosquitto(t, 0, "allow_anonymous true\n").Port
}

// startCoapServer runs libcoap's coap-server on a free port and returns it.
func startCoapServer(t *testing.T) int {
	t.Helper()
	return peer.StartCoapServer(t).Port
}
