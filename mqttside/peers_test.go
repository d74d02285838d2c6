package mqttside

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
)

// runPeer runs a peer client binary with a timeout and returns its output.
func runPeer(tb testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, peer.Require(tb, name), args...).CombinedOutput()
	return string(out), err
}
