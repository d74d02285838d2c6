package coapside

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// nodeCoap returns the node binary and the environment that finds node-coap,
// installed by `npm ci` in e2e/testdata/nodecoap (.ci/run does it). Without
// it the test is skipped, unless BRIDGE_E2E_STRICT=1.
func nodeCoap(t *testing.T) (string, []string) {
	t.Helper()
	node := peer.Require(t, "node")
	mods, err := filepath.Abs("../e2e/testdata/nodecoap/node_modules")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mods, "coap")); err != nil {
		if os.Getenv(peer.StrictEnv) == "1" {
			t.Fatalf("node-coap required (BRIDGE_E2E_STRICT=1): %v", err)
		}
		t.Skipf("node-coap not installed in %s", mods)
	}
	return node, append(os.Environ(), "NODE_PATH="+mods)
}

// nodeValues extracts the numbers of "n v<k>" or "n <<k>>" lines.
func nodeValues(out string) []int {
	var vals []int
	for line := range strings.SplitSeq(out, "\n") {
		p, ok := strings.CutPrefix(line, "n ")
		if !ok {
			continue
		}
		p = strings.Trim(p, "v<>")
		if v, err := strconv.Atoi(p); err == nil {
			vals = append(vals, v)
		}
	}
	return vals
}

func increasing(v []int) bool {
	for i := 1; i < len(v); i++ {
		if v[i] <= v[i-1] {
			return false
		}
	}
	return true
}

func TestInteropNodeCoapObservesOurServer(t *testing.T) {
	node, env := nodeCoap(t)
	s := startRFCInteropServer(t)
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				s.counter.set([]byte("<" + strconv.Itoa(i) + ">"))
				s.obs.Notify("/obs")
			}
		}
	}()
	defer func() {
		close(stop)
		<-ticked
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "testdata/nodecoap/observe.js", "client", "coap://"+s.addr+"/obs", "1.5")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node-coap client: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "observe true") {
		t.Fatalf("registration response without Observe:\n%s", out)
	}
	vals := nodeValues(string(out))
	if len(vals) < 5 || !increasing(vals) {
		t.Errorf("node-coap saw %v", vals)
	}
	// The script deregisters with GET Observe=1 before it exits (RFC 7641 §3.6).
	testkit.Eventually(t, 3*time.Second, "node-coap deregistration", func() bool { return s.obs.Observers("/obs") == 0 })
}

func TestInteropOurClientObservesNodeCoap(t *testing.T) {
	node, env := nodeCoap(t)
	pc, err := newLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, "testdata/nodecoap/observe.js", "server", strconv.Itoa(pc))
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := sc.Scan() && sc.Text() == "ready"
		ready <- ok
		for sc.Scan() { // keep draining until the process ends
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("node-coap server did not start: %s", stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("node-coap server did not start")
	}
	c := newBlockClient(t, ClientBlockwiseOptions{})
	fn, ch := collect(64)
	o, err := c.Observe(testCtx(t), fmt.Sprintf("coap://127.0.0.1:%d/obs", pc), fn)
	if err != nil {
		t.Fatal(err)
	}
	var vals []int
	for len(vals) < 4 {
		n := nextNote(t, ch)
		v, _ := strconv.Atoi(strings.TrimPrefix(string(n.Payload), "v"))
		vals = append(vals, v)
	}
	if !increasing(vals) {
		t.Errorf("notifications %v", vals)
	}
	if err := o.Cancel(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	o.Wait()
	for len(ch) > 0 {
		<-ch
	}
	noNote(t, ch, 600*time.Millisecond)
}

// newLoopbackPort returns a UDP port that was free a moment ago.
func newLoopbackPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}
