package peer

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// recorder stands in for a test, recording how it was ended.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recorder) Skip(a ...any)                  { r.skip = fmt.Sprint(a...) }

// TestUnavailable: a test that cannot run is skipped locally and fails
// under BRIDGE_E2E_STRICT=1.
func TestUnavailable(t *testing.T) {
	t.Setenv(StrictEnv, "")
	r := &recorder{TB: t}
	Unavailable(r, "no IPv6 loopback: %v", "refused")
	if r.skip != "no IPv6 loopback: refused" || r.fatal != "" {
		t.Errorf("without %s: skip %q, fatal %q; want a skip", StrictEnv, r.skip, r.fatal)
	}
	t.Setenv(StrictEnv, "1")
	r = &recorder{TB: t}
	Unavailable(r, "no IPv6 loopback: %v", "refused")
	if r.fatal == "" || r.skip != "" {
		t.Errorf("with %s=1: skip %q, fatal %q; want a failure", StrictEnv, r.skip, r.fatal)
	}
}

// TestCoapServerOutputWhileRunning reads a server's output while it is
// still writing it, as a failing test does; -race checks the buffer.
func TestCoapServerOutputWhileRunning(t *testing.T) {
	s := StartCoapServerProcess(t, "-v", "7") // debug: a line per datagram
	c, err := net.DialUDP("udp", nil, s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 50 {
		// An empty CON, a CoAP ping (RFC 7252 §4.3), each with its own MID.
		if _, err := c.Write([]byte{0x40, 0x00, 0x20, byte(i)}); err != nil {
			t.Fatal(err)
		}
		_ = s.Output()
	}
	testkit.Eventually(t, 5*time.Second, "the server to log the pings", func() bool { return len(s.Output()) > 0 })
}

// TestFreePortsAreNeverHandedOutTwice: the kernel hands the same ephemeral
// port out again often (hundreds of repeats in 2,000 tries here), and a test
// that gave its broker and its HTTP listener one port failed at random.
func TestFreePortsAreNeverHandedOutTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		p := FreeTCPPort(t)
		if seen[p] {
			t.Fatalf("TCP port %d handed out twice", p)
		}
		seen[p] = true
	}
}
