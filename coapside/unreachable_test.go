package coapside

import (
	"context"
	"errors"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// slowTimeoutOpts are transmission parameters under which an
// unacknowledged CON takes over a minute to time out (ACK_TIMEOUT 2 s,
// MAX_RETRANSMIT 4): anything a test sees fail within seconds was not
// failed by a timeout.
func slowTimeoutOpts() EndpointOptions {
	return EndpointOptions{AckTimeout: 2 * time.Second, AckRandomFactor: 1.0, MaxRetransmit: 4, SeparateAfter: time.Second}
}

// loopbacks are the loopback addresses the tests run on, IPv6 when the
// host has it.
func loopbacks(t *testing.T) []string {
	if runtime.GOOS != "linux" {
		t.Skip("ICMP errors reach unconnected UDP sockets on Linux only")
	}
	ips := []string{"127.0.0.1"}
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err == nil {
		c.Close()
		ips = append(ips, "::1")
	}
	return ips
}

// rawPeerAt is newRawPeer on the loopback address ip.
func rawPeerAt(t *testing.T, ip string, to *net.UDPAddr) *rawPeer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, conn: c, to: to}
}

// closedPort returns an address on ip where nothing listens.
func closedPort(t *testing.T, ip string) *net.UDPAddr {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	a := c.LocalAddr().(*net.UDPAddr)
	c.Close()
	return a
}

// TestObserverOnClosedSocketRemovedAtOnce: an observer whose socket has
// closed answers the check CON (or a NON notification) with ICMP port
// unreachable; it is removed within seconds, with every other
// registration of that address, not after the CON's minute of
// retransmissions, and counted. Another client's observer stays, and the
// listener's readers count no failure.
func TestObserverOnClosedSocketRemovedAtOnce(t *testing.T) {
	for _, ip := range loopbacks(t) {
		for _, mode := range []string{"check", "publish"} {
			t.Run(ip+"/"+mode, func(t *testing.T) {
				conn, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
				if err != nil {
					t.Fatal(err)
				}
				opts := ObserveOptions{CheckInterval: 200 * time.Millisecond}
				if mode == "publish" {
					// NON notifications only: no CON is ever pending.
					opts = ObserveOptions{ConEvery: 1 << 20}
				}
				res := &counterResource{value: []byte("v")}
				obs, addr := startObserveServerWith(t, conn, opts, slowTimeoutOpts(), res)
				gone, stays := rawPeerAt(t, ip, addr), rawPeerAt(t, ip, addr)
				for i := range 3 {
					if r := register(t, gone, uint16(i+1), []byte{byte(i + 1)}, nil); !r.Options.Has(message.Observe) {
						t.Fatal("registration refused")
					}
				}
				if r := register(t, stays, 9, []byte{9}, nil); !r.Options.Has(message.Observe) {
					t.Fatal("registration refused")
				}
				gone.conn.Close()
				start := time.Now()
				testkit.Eventually(t, 5*time.Second, "closed observer removed", func() bool {
					if mode == "publish" {
						obs.Notify("/obs")
					}
					return obs.Observers("/obs") == 1
				})
				t.Logf("removed %v after the socket closed", time.Since(start))
				s := obs.Stats()
				if s.Unreachable != 3 || s.Timeouts != 0 {
					t.Errorf("observers removed as unreachable %d, timeouts %d; want 3, 0", s.Unreachable, s.Timeouts)
				}
				ep := endpointOf(t, obs, addr)
				st := ep.Stats().Snapshot()
				if st.Unreachable == 0 || st.ReadErrors != 0 || st.ReaderRestarts != 0 || ep.Stalled() {
					t.Errorf("unreachable %d, read errors %d, reader restarts %d, stalled %v",
						st.Unreachable, st.ReadErrors, st.ReaderRestarts, ep.Stalled())
				}
				// The listener still serves.
				if r := register(t, rawPeerAt(t, ip, addr), 1, []byte{1}, nil); !r.Options.Has(message.Observe) {
					t.Error("registration after the removal refused")
				}
			})
		}
	}
}

// endpointOf returns the endpoint serving addr for the observers of obs.
func endpointOf(t *testing.T, obs *ObserveServer, addr *net.UDPAddr) *Endpoint {
	t.Helper()
	obs.mu.Lock()
	defer obs.mu.Unlock()
	for _, tg := range obs.targets {
		if tg.ep.LocalAddr().String() == addr.String() {
			return tg.ep
		}
	}
	t.Fatal("no observer target on", addr)
	return nil
}

// TestRequestToClosedPortFailsFast: a request, CON or NON, to an address
// where nothing listens fails within a second with ErrUnreachable (wrapping
// ECONNREFUSED) instead of after MAX_TRANSMIT_WAIT, and the client's
// socket keeps working, with batched reads and without.
func TestRequestToClosedPortFailsFast(t *testing.T) {
	for _, ip := range loopbacks(t) {
		for _, typ := range []message.Type{message.Confirmable, message.NonConfirmable} {
			for _, batch := range []bool{true, false} {
				name := ip + "/" + typ.String() + "/batch"
				if !batch {
					name += "-off"
				}
				t.Run(name, func(t *testing.T) { requestToClosedPort(t, net.JoinHostPort(ip, "0"), ip, typ, batch) })
			}
		}
	}
	// A dual-stack socket hears the ICMP errors of its IPv4 peers too.
	if c, err := net.ListenPacket("udp", "[::]:0"); err == nil {
		c.Close()
		t.Run("dual-stack", func(t *testing.T) { requestToClosedPort(t, "[::]:0", "127.0.0.1", message.Confirmable, true) })
	}
}

// requestToClosedPort sends a request of type typ from a client on local
// to a closed port on ip.
func requestToClosedPort(t *testing.T, local, ip string, typ message.Type, batch bool) {
	eo := slowTimeoutOpts()
	eo.DisableBatching = !batch
	c, err := NewClient(ClientOptions{EndpointOptions: eo, LocalAddr: local})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dead := closedPort(t, ip)
	// The kernel rate-limits the ICMP errors it sends (globally, about
	// 1,000 a second with a small burst: net.ipv4.icmp_msgs_per_sec), and
	// other tests on the machine may use that budget up: an error may be
	// missing now and then, and a NON request, sent once, then only ends
	// at its deadline. One of three attempts must fail at once.
	misses := 0
	for attempt := 0; attempt < 3; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var req *Request
		req, err = NewRequest(message.GET, "coap://"+dead.String()+"/x", nil)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		req.Type = typ
		_, err = c.Do(ctx, req)
		cancel()
		if errors.Is(err, ErrUnreachable) {
			break
		}
		t.Logf("attempt %d: %v", attempt+1, err)
		misses++
	}
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("request to a closed port: %v, want ErrUnreachable (ECONNREFUSED) within 3s", err)
	}
	// The same client reaches a live server afterwards.
	h := HandlerFunc(func(w ResponseWriter, _ *Request) { _, _ = w.Write([]byte("up")) })
	sc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	_, live := startServerOn(t, sc, h, ServerOptions{EndpointOptions: fastOpts()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, "coap://"+live.String()+"/x")
	if err != nil || string(resp.Payload) != "up" {
		t.Fatalf("request to a live server after the failure: %v, %v", resp, err)
	}
	st := c.Endpoint().Stats().Snapshot()
	if st.Unreachable == 0 || st.ReadErrors != 0 || st.Timeouts > uint64(misses) {
		t.Errorf("unreachable %d, read errors %d, timeouts %d", st.Unreachable, st.ReadErrors, st.Timeouts)
	}
}
