package coapside

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// listenOn opens a UDP socket on ip (port 0), skipping the test when the
// address is not there.
func listenOn(t *testing.T, ip net.IP) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Skipf("address %v: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// arrivals sends one datagram from each sender to dst and returns the
// senders whose datagram dst read.
func arrivals(t *testing.T, dst *net.UDPConn, to *net.UDPAddr, senders ...*net.UDPConn) []netip.Addr {
	t.Helper()
	for _, s := range senders {
		if _, err := s.WriteToUDP([]byte("x"), to); err != nil {
			t.Fatal(err)
		}
	}
	var got []netip.Addr
	buf := make([]byte, 64)
	for {
		_ = dst.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, from, err := dst.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		got = append(got, from.Addr().Unmap())
	}
	slices.SortFunc(got, netip.Addr.Compare)
	return got
}

// TestSocketFilterDropsBlockedSources attaches the block program to real
// sockets — IPv4, IPv6 and a dual-stack socket receiving IPv4 — and checks
// the kernel drops exactly the blocked sources and counts them.
func TestSocketFilterDropsBlockedSources(t *testing.T) {
	a1, a2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	s1, s2 := listenOn(t, net.IPv4(127, 0, 0, 1)), listenOn(t, net.IPv4(127, 0, 0, 2))

	for _, c := range []struct {
		name string
		ip   net.IP
	}{{"ipv4", net.IPv4(127, 0, 0, 1)}, {"dual-stack", net.IPv6unspecified}} {
		t.Run(c.name, func(t *testing.T) {
			dst := listenOn(t, c.ip)
			to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: dst.LocalAddr().(*net.UDPAddr).Port}
			if got := arrivals(t, dst, to, s1, s2); !slices.Equal(got, []netip.Addr{a1, a2}) {
				t.Fatalf("without a filter: %v", got)
			}
			drops0, ok := socketDrops(dst)
			if !ok {
				t.Fatal("no SO_MEMINFO")
			}
			// Other blocked sources, IPv6 among them, change nothing for a2.
			block := []netip.Addr{netip.MustParseAddr("10.1.2.3"), a1, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:10.9.9.9")}
			if err := attachFilter(dst, blockProgram(block)); err != nil {
				t.Fatal(err)
			}
			if got := arrivals(t, dst, to, s1, s2, s1); !slices.Equal(got, []netip.Addr{a2}) {
				t.Fatalf("blocking %v: %v arrived", block, got)
			}
			if drops, _ := socketDrops(dst); drops-drops0 != 2 {
				t.Fatalf("kernel drops %d, want 2", drops-drops0)
			}
			if err := detachFilter(dst); err != nil {
				t.Fatal(err)
			}
			if got := arrivals(t, dst, to, s1); !slices.Equal(got, []netip.Addr{a1}) {
				t.Fatalf("after detaching: %v", got)
			}
		})
	}

	t.Run("ipv6", func(t *testing.T) {
		dst := listenOn(t, net.IPv6loopback)
		src := listenOn(t, net.IPv6loopback)
		to := dst.LocalAddr().(*net.UDPAddr)
		lo := netip.IPv6Loopback()
		// An address differing from ::1 only in its first, then its last
		// word must not match.
		near := []netip.Addr{netip.MustParseAddr("1::1"), netip.MustParseAddr("::2"), netip.MustParseAddr("127.0.0.1")}
		if err := attachFilter(dst, blockProgram(near)); err != nil {
			t.Fatal(err)
		}
		if got := arrivals(t, dst, to, src); !slices.Equal(got, []netip.Addr{lo}) {
			t.Fatalf("blocking %v: %v arrived", near, got)
		}
		if err := attachFilter(dst, blockProgram(append(near, lo))); err != nil {
			t.Fatal(err)
		}
		if got := arrivals(t, dst, to, src); len(got) != 0 {
			t.Fatalf("blocking ::1: %v arrived", got)
		}
	})

	t.Run("full list", func(t *testing.T) {
		dst := listenOn(t, net.IPv4(127, 0, 0, 1))
		to := dst.LocalAddr().(*net.UDPAddr)
		var block []netip.Addr
		for i := range MaxBlockedSources / 2 {
			block = append(block, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}),
				netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}))
		}
		block[len(block)-1] = a1 // the last entry of the longest program
		if err := attachFilter(dst, blockProgram(block)); err != nil {
			t.Fatal(err)
		}
		if got := arrivals(t, dst, to, s1, s2); !slices.Equal(got, []netip.Addr{a2}) {
			t.Fatalf("%v arrived", got)
		}
	})
}

// TestServerBlocksSourceFloodingPastItsLimit floods a rate-limited server
// from one loopback address: once it has been refused more than its burst
// within a second the kernel drops it (it gets no answer, the server reads
// nothing more from it, the socket's drop counter grows) while another
// source is served; the block is lifted after RateBlock.
func TestServerBlocksSourceFloodingPastItsLimit(t *testing.T) {
	mux := NewServeMux()
	mux.HandleFunc("POST /in", func(w ResponseWriter, r *Request) { w.SetCode(message.Changed) })
	const block = 1500 * time.Millisecond
	srv, addr := startServer(t, mux, ServerOptions{EndpointOptions: fastOpts(), RateLimit: 50, RateBurst: 50, RateBlock: block})
	ep := srv.Endpoints()[0]
	flooder := &rawPeer{t: t, conn: listenOn(t, net.IPv4(127, 0, 0, 31)), to: addr}
	good := &rawPeer{t: t, conn: listenOn(t, net.IPv4(127, 0, 0, 32)), to: addr}
	post := func(p *rawPeer, typ message.Type, mid uint16) {
		p.sendMsg(&message.Message{Type: typ, Code: message.POST, MessageID: mid, Token: []byte{1},
			Options: message.Options{}.Add(message.URIPath, []byte("in"))})
	}
	answered := func(p *rawPeer, mid uint16) bool {
		post(p, message.Confirmable, mid)
		for {
			m, _, ok := p.recv(300 * time.Millisecond)
			if !ok {
				return false
			}
			if m.MessageID == mid && m.Code == message.Changed {
				return true
			}
		}
	}
	// Refused more than 1,000 times (ten buckets of 50 are fewer) within
	// a second: NONs in bursts of 50 (the test socket's receive buffer is
	// small), about 25,000 a second, until the source is blocked.
	flooded := netip.MustParseAddr("127.0.0.31")
	for i := 0; !slices.Equal(ep.BlockedSources(), []netip.Addr{flooded}); i++ {
		if i == 400 {
			t.Fatalf("blocked sources %v after 20,000 requests, want [%v]; stats %+v", ep.BlockedSources(), flooded, ep.Stats().Snapshot())
		}
		for j := range 50 {
			post(flooder, message.NonConfirmable, uint16(50*i+j))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if n := ep.Stats().RateLimited.Load(); n < 1000 {
		t.Fatalf("blocked after %d refusals, want more than 1,000", n)
	}
	if n := ep.Stats().SourcesBlocked.Load(); n != 1 {
		t.Fatalf("SourcesBlocked %d, want 1", n)
	}
	for {
		if _, _, ok := flooder.recv(100 * time.Millisecond); !ok {
			break // the answers sent before the block
		}
	}
	recv0 := ep.Stats().Received.Load()
	drops0, _ := ep.KernelDrops()
	if answered(flooder, 1000) {
		t.Fatal("a blocked source was answered")
	}
	if !answered(good, 1) {
		t.Fatal("another source was not served while one is blocked")
	}
	if n := ep.Stats().Received.Load() - recv0; n != 1 {
		t.Fatalf("the server read %d datagrams, want only the other source's 1", n)
	}
	if drops, _ := ep.KernelDrops(); drops-drops0 < 1 {
		t.Fatalf("kernel drops %d → %d", drops0, drops)
	}
	// The block runs out: the source is served again (its bucket has
	// refilled meanwhile) and nothing is blocked.
	time.Sleep(block)
	deadline := time.Now().Add(5 * time.Second)
	for len(ep.BlockedSources()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still blocked: %v", ep.BlockedSources())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !answered(flooder, 2000) {
		t.Fatal("the source is not served after its block ran out")
	}
}

// TestRateLimitBlocksOnlySourcesFloodingPastTheirBurst drives the limiter's
// clock: a source refused up to ten times its burst within a second is
// only refused; one more refusal in that second marks it; spread over
// longer it never is; a small bucket still takes 1,000 refusals.
func TestRateLimitBlocksOnlySourcesFloodingPastTheirBurst(t *testing.T) {
	l := newRateLimiter(200, 200, 0) // burst 200 → blocked after 2,000 refusals in a second
	l.blockFloods()
	k := rlKey{ip: netip.MustParseAddr("192.0.2.1")}
	now := time.Unix(1000, 0).UnixNano()
	for range 200 {
		if v, _, _ := l.take(k, now); v != rateAllow {
			t.Fatal("refused within the burst")
		}
	}
	for i := range 2000 {
		if v, _, _ := l.take(k, now+int64(i)); v == rateBlock || v == rateAllow {
			t.Fatalf("refusal %d: %v", i+1, v)
		}
	}
	if v, _, _ := l.take(k, now+2000); v != rateBlock {
		t.Fatalf("refusal 2,001 within a second: %v, want rateBlock", v)
	}
	// Another source at ten times its limit: 1,800 refusals a second,
	// never blocked.
	k2 := rlKey{ip: netip.MustParseAddr("192.0.2.2")}
	blocked := 0
	for i := range 20000 {
		if v, _, _ := l.take(k2, now+int64(i)*int64(time.Second/2000)); v == rateBlock {
			blocked++
		}
	}
	if blocked != 0 {
		t.Fatalf("a source at twice its limit was blocked %d times", blocked)
	}
	if l2 := newRateLimiter(1, 1, 0); l2.blockAfter != 0 {
		t.Fatal("blocking on without blockFloods")
	}
	small := newRateLimiter(1, 1, 0)
	small.blockFloods()
	if small.blockAfter != minBlockAfter {
		t.Fatalf("a bucket of 1 blocks after %d refusals, want %d", small.blockAfter, minBlockAfter)
	}
}
