package mqttside

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
)

// eventually polls cond until it holds or the timeout passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runPeer runs a peer client binary with a timeout and returns its output.
func runPeer(tb testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, peer.Require(tb, name), args...).CombinedOutput()
	return string(out), err
}
