package peer

import (
	"net"
	"testing"
	"time"
)

// StartNAT starts a NAT for tests in front of target (loopback only): each
// client that sends through it reaches target from a port of its own (its
// binding), only target can answer through a binding, a binding the client
// leaves idle for idle (0: never) closes, and Rebind moves a client to a
// new port. It is a LossyProxy that loses nothing; it stops when the test
// ends.
func StartNAT(tb testing.TB, target *net.UDPAddr, idle time.Duration) *LossyProxy {
	tb.Helper()
	return StartLossyProxy(tb, LossyConfig{Target: target, IdleTimeout: idle})
}
