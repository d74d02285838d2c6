package coapside

import (
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/observe"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// newRawPeerOn is newRawPeer on a socket bound to ip, a second source
// address on loopback (127.0.0.0/8 is all local on Linux).
func newRawPeerOn(t *testing.T, ip string, to *net.UDPAddr) *rawPeer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Skipf("cannot bind %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, conn: c, to: to}
}

// TestObserveServerPerSourceLimit: one source address (any port) holds at
// most MaxObserversPerSource registrations; beyond them it is answered
// without Observe (RFC 7641 §4.1) while another source still registers,
// until the total is reached. Every refusal is counted; a deregistration
// frees its unit.
func TestObserveServerPerSourceLimit(t *testing.T) {
	res := &counterResource{value: []byte("v")}
	obs, addr := startObserveServer(t, ObserveOptions{MaxObservers: 3, MaxObserversPerSource: 2}, res)
	a1, a2 := newRawPeer(t, addr), newRawPeer(t, addr)
	b := newRawPeerOn(t, "127.0.0.2", addr)
	accepted := func(p *rawPeer, mid uint16, tok byte) bool {
		t.Helper()
		return register(t, p, mid, []byte{tok}, nil).Options.Has(message.Observe)
	}
	if !accepted(a1, 1, 1) || !accepted(a2, 2, 2) {
		t.Fatal("registrations within the source's share refused")
	}
	if accepted(a1, 3, 3) || accepted(a2, 4, 4) {
		t.Error("a third registration from the same address (another port too) was accepted")
	}
	if !accepted(b, 5, 5) {
		t.Error("another source was refused while the first held its share")
	}
	if accepted(b, 6, 6) {
		t.Error("a registration beyond the total was accepted")
	}
	h := obs.LimitHits()
	if h[LimitObserversPerSource] != 2 || h[LimitObservers] != 1 {
		t.Errorf("limit hits per source %d, total %d; want 2, 1", h[LimitObserversPerSource], h[LimitObservers])
	}
	// Observe=1 deregisters token 1: its unit is free again.
	m := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: 7, Token: []byte{1}}
	m.Options = m.Options.SetPath("/obs").SetUint(message.Observe, observe.Deregister)
	a1.sendMsg(m)
	a1.mustRecv(2 * time.Second)
	if !accepted(a1, 8, 8) {
		t.Error("a registration after a deregistration was refused")
	}
	if n := obs.Observers("/obs"); n != 3 {
		t.Errorf("observers %d, want 3", n)
	}
}

// TestObserveServerChecksSilentObserver: an observer whose socket has
// closed, on a resource that never changes, is sent a confirmable
// notification once CheckInterval passes without a confirmed contact and
// is removed when it goes unacknowledged.
func TestObserveServerChecksSilentObserver(t *testing.T) {
	res := &counterResource{value: []byte("v")}
	obs, addr := startObserveServer(t, ObserveOptions{CheckInterval: 200 * time.Millisecond}, res)
	p := newRawPeer(t, addr)
	if r := register(t, p, 1, []byte{1}, nil); !r.Options.Has(message.Observe) {
		t.Fatal("registration refused")
	}
	// The check arrives as a CON with the current state; this client
	// answers nothing (its socket is gone as far as the server can tell).
	m := p.mustRecv(3 * time.Second)
	if m.Type != message.Confirmable || string(m.Payload) != "v" || !m.Options.Has(message.Observe) {
		t.Fatalf("check notification %v", m)
	}
	p.conn.Close()
	testkit.Eventually(t, 15*time.Second, "silent observer removed", func() bool { return obs.Observers("/obs") == 0 })
	// Removed after its CON timed out, or at once where the closed
	// socket's ICMP port unreachable is heard (Linux).
	if s := obs.Stats(); s.Checks == 0 || s.Timeouts+s.Unreachable != 1 {
		t.Errorf("checks %d, timeouts %d, unreachable %d", s.Checks, s.Timeouts, s.Unreachable)
	}
}

// TestBlockwisePerSourceLimitAndTimeout: one source address holds at most
// MaxTransfersPerSource Block1 uploads (5.03 beyond, counted) while another
// still starts one, until the total is reached; an abandoned upload is
// reclaimed after Lifetime, so the source can start again.
func TestBlockwisePerSourceLimitAndTimeout(t *testing.T) {
	h := HandlerFunc(func(w ResponseWriter, _ *Request) { w.SetCode(message.Changed) })
	opts := ServerOptions{EndpointOptions: fastOpts(), Blockwise: BlockwiseOptions{
		MaxTransfers: 3, MaxTransfersPerSource: 2, Lifetime: 300 * time.Millisecond}}
	srv, addr := startServer(t, h, opts)
	first := func(p *rawPeer, mid uint16) message.Code {
		t.Helper()
		m := &message.Message{Type: message.Confirmable, Code: message.PUT, MessageID: mid, Token: []byte{byte(mid)}, Payload: make([]byte, 16)}
		v, _ := block.Option{Num: 0, More: true, SZX: 0}.Value()
		m.Options = m.Options.SetPath("/up").SetUint(message.Block1, v)
		p.sendMsg(m)
		return p.mustRecv(2 * time.Second).Code
	}
	a := []*rawPeer{newRawPeer(t, addr), newRawPeer(t, addr), newRawPeer(t, addr)}
	b := []*rawPeer{newRawPeerOn(t, "127.0.0.2", addr), newRawPeerOn(t, "127.0.0.2", addr)}
	for i, want := range []message.Code{message.Continue, message.Continue, message.ServiceUnavailable} {
		if got := first(a[i], uint16(1+i)); got != want {
			t.Errorf("source A upload %d answered %v, want %v", i, got, want)
		}
	}
	if got := first(b[0], 10); got != message.Continue {
		t.Errorf("source B answered %v while A held its share", got)
	}
	if got := first(b[1], 11); got != message.ServiceUnavailable {
		t.Errorf("upload beyond the total answered %v", got)
	}
	hits := srv.Blockwise().LimitHits()
	if hits[LimitBlock1TransfersPerSource] != 1 || hits[LimitBlock1Transfers] != 1 {
		t.Errorf("limit hits per source %d, total %d; want 1, 1", hits[LimitBlock1TransfersPerSource], hits[LimitBlock1Transfers])
	}
	// Abandoned: after Lifetime the slots are reclaimed.
	mid := uint16(20)
	testkit.Eventually(t, 5*time.Second, "abandoned uploads reclaimed", func() bool {
		mid++
		return first(a[2], mid) == message.Continue
	})
}

// TestBlockwiseSize1OverLimit: a first block announcing a body larger than
// MaxBodySize is answered at once with 4.13 and Size1 set to the limit
// (RFC 7959 §2.9.3, §4), and counted.
func TestBlockwiseSize1OverLimit(t *testing.T) {
	h := HandlerFunc(func(w ResponseWriter, _ *Request) { w.SetCode(message.Changed) })
	srv, addr := startServer(t, h, ServerOptions{EndpointOptions: fastOpts(), Blockwise: BlockwiseOptions{MaxBodySize: 4096}})
	p := newRawPeer(t, addr)
	m := &message.Message{Type: message.Confirmable, Code: message.PUT, MessageID: 1, Token: []byte{1}, Payload: make([]byte, 64)}
	v, _ := block.Option{Num: 0, More: true, SZX: 2}.Value()
	m.Options = m.Options.SetPath("/up").SetUint(message.Block1, v).SetUint(message.Size1, 1<<20)
	p.sendMsg(m)
	r := p.mustRecv(2 * time.Second)
	if r.Code != message.RequestEntityTooLarge {
		t.Fatalf("answered %v", r)
	}
	if s1, err := r.Options.Uint(message.Size1); err != nil || s1 != 4096 {
		t.Errorf("Size1 %d (%v), want 4096", s1, err)
	}
	if n := srv.Blockwise().LimitHits()[LimitBlock1Size]; n != 1 {
		t.Errorf("block1_size hits %d", n)
	}
}

// TestObserveServerUnreachableClient: when a confirmable notification to a
// client times out, every registration of that client goes at once, and
// the CON notifications queued for it behind NSTART are never sent.
func TestObserveServerUnreachableClient(t *testing.T) {
	res := &counterResource{value: []byte("v")}
	obs, addr := startObserveServer(t, ObserveOptions{ConEvery: 1}, res)
	p := newRawPeer(t, addr)
	const regs = 5
	for i := range regs {
		if r := register(t, p, uint16(i+1), []byte{byte(i + 1)}, nil); !r.Options.Has(message.Observe) {
			t.Fatal("registration refused")
		}
	}
	obs.Notify("/obs")
	// The client answers nothing from here on.
	mids := map[uint16]int{}
	testkit.Eventually(t, 10*time.Second, "every registration removed", func() bool {
		if m, _, ok := p.recv(50 * time.Millisecond); ok {
			mids[m.MessageID]++
		}
		return obs.Observers("/obs") == 0
	})
	for {
		m, _, ok := p.recv(time.Second)
		if !ok {
			break
		}
		mids[m.MessageID]++
	}
	if len(mids) != 1 {
		t.Errorf("the client was sent %d distinct notifications (%v), want the first CON only", len(mids), mids)
	}
}

// TestHandlersPerSource: one source holding slow requests takes at most
// MaxConcurrentPerSource handler slots; its further CONs get 5.03 with
// Max-Age and its NONs are dropped, each counted, while a second source is
// still served although the global MaxConcurrent would have room for every
// request of the first.
func TestHandlersPerSource(t *testing.T) {
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	mux := NewServeMux()
	mux.HandleFunc("POST /slow", func(w ResponseWriter, _ *Request) {
		entered <- struct{}{}
		<-release
		w.SetCode(message.Changed)
	})
	mux.HandleFunc("GET /fast", func(w ResponseWriter, _ *Request) { _, _ = w.Write([]byte("ok")) })
	opts := fastOpts()
	opts.SeparateAfter = 10 * time.Second // slow requests get no empty ACK meanwhile
	srv, addr := startServer(t, mux, ServerOptions{EndpointOptions: opts, MaxConcurrent: 8, MaxConcurrentPerSource: 4})
	defer close(release)
	a := newRawPeer(t, addr)
	slow := func(typ message.Type, mid uint16) {
		m := &message.Message{Type: typ, Code: message.POST, MessageID: mid, Token: []byte{byte(mid)}}
		m.Options = m.Options.SetPath("/slow")
		a.sendMsg(m)
	}
	for i := range 4 {
		slow(message.Confirmable, uint16(i+1))
		<-entered
	}
	// Beyond its share: CONs answered 5.03 with Max-Age, a NON dropped.
	for i := range 3 {
		mid := uint16(10 + i)
		slow(message.Confirmable, mid)
		m := a.mustRecv(2 * time.Second)
		if m.MessageID != mid || m.Type != message.Acknowledgement || m.Code != message.ServiceUnavailable || !m.Options.Has(message.MaxAge) {
			t.Fatalf("request beyond the source's share got %v", m)
		}
	}
	slow(message.NonConfirmable, 20)
	a.expectSilence(200 * time.Millisecond)
	select {
	case <-entered:
		t.Fatal("a handler ran beyond the source's share")
	default:
	}
	// Another source is served meanwhile.
	b := newRawPeerOn(t, "127.0.0.2", addr)
	m := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: 30, Token: []byte{30}}
	m.Options = m.Options.SetPath("/fast")
	b.sendMsg(m)
	if r := b.mustRecv(2 * time.Second); r.Code != message.Content || string(r.Payload) != "ok" {
		t.Fatalf("second source got %v while the first held its share", r)
	}
	if h := srv.Endpoints()[0].LimitHits(); h[LimitHandlersPerSource] != 4 {
		t.Errorf("handlers_per_source hits %d, want 4", h[LimitHandlersPerSource])
	}
	if n := srv.Stats().Overloaded; n != 0 {
		t.Errorf("overloaded %d: the global limit was never reached", n)
	}
}
