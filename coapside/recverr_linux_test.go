package coapside

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// TestQueuedICMPErrorFailsNextWrite: with the error queue on, Linux fails
// the next call on the socket after an ICMP error, whatever that call's
// destination: a write to a live peer then fails with ECONNREFUSED (which
// is why the endpoint drains and writes again). Draining reports the
// closed destination, and the write that follows goes through.
func TestQueuedICMPErrorFailsNextWrite(t *testing.T) {
	for _, ip := range loopbacks(t) {
		t.Run(ip, func(t *testing.T) {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if !enableRecvErr(c) {
				t.Fatal("error queue not enabled")
			}
			live, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
			if err != nil {
				t.Fatal(err)
			}
			defer live.Close()
			dead := closedPort(t, ip)
			if _, err := c.WriteToUDP([]byte("x"), dead); err != nil {
				t.Fatal(err)
			}
			var got []netip.AddrPort
			testkit.Eventually(t, 2*time.Second, "ICMP error queued", func() bool {
				_, err = c.WriteToUDP([]byte("y"), live.LocalAddr().(*net.UDPAddr))
				if err == nil {
					return false
				}
				if !errors.Is(err, syscall.ECONNREFUSED) || !queuedErrno(err) {
					t.Fatalf("write to a live peer: %v", err)
				}
				drainErrQueue(c, func(ap netip.AddrPort) { got = append(got, ap) })
				return true
			})
			want := netip.AddrPortFrom(dead.AddrPort().Addr().Unmap(), dead.AddrPort().Port())
			if len(got) != 1 || got[0] != want {
				t.Errorf("drained destinations %v, want [%v]", got, want)
			}
			if _, err := c.WriteToUDP([]byte("y"), live.LocalAddr().(*net.UDPAddr)); err != nil {
				t.Errorf("write after draining: %v", err)
			}
		})
	}
}
