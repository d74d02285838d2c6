package coapside

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func TestRateLimiterBucketRefillBurstMaxAge(t *testing.T) {
	l := newRateLimiter(10, 3, 0) // a token every 100 ms, bucket of 3
	k := rlKey{ip: netip.MustParseAddr("192.0.2.1")}
	t0 := time.Unix(1000, 0).UnixNano()
	ms := int64(time.Millisecond)
	take := func(at int64) (rateVerdict, uint32) {
		v, age, ev := l.take(k, at)
		if ev {
			t.Fatal("eviction with one source")
		}
		return v, age
	}
	for i := range 3 {
		if v, _ := take(t0); v != rateAllow {
			t.Fatalf("burst request %d: verdict %d", i, v)
		}
	}
	// Over the limit: one 4.29 whose Max-Age covers the wait for the next
	// token (100 ms, rounded up to a whole second), then silence.
	if v, age := take(t0); v != rateReply || age != 1 {
		t.Fatalf("4th request: verdict %d Max-Age %d, want reply with 1", v, age)
	}
	if v, _ := take(t0 + 10*ms); v != rateDrop {
		t.Fatalf("5th request: verdict %d, want drop", v)
	}
	// A token refills after 100 ms: one request passes, the next does not,
	// silently (still within the Max-Age period of the 4.29 sent).
	if v, _ := take(t0 + 100*ms); v != rateAllow {
		t.Fatalf("after refill: verdict %d", v)
	}
	if v, _ := take(t0 + 100*ms); v != rateDrop {
		t.Fatalf("after refill, 2nd: verdict %d, want drop", v)
	}
	// After the Max-Age period an over-limit source is told again.
	for range 3 {
		take(t0 + 1000*ms)
	}
	if v, age := take(t0 + 1000*ms); v != rateReply || age != 1 {
		t.Fatalf("after the silent period: verdict %d Max-Age %d", v, age)
	}
	// The whole bucket refills after burst/rate.
	for i := range 3 {
		if v, _ := take(t0 + 2000*ms); v != rateAllow {
			t.Fatalf("refilled bucket, request %d: verdict %d", i, v)
		}
	}
}

func TestRateLimiterMaxAgeIsSecondsUntilAToken(t *testing.T) {
	l := newRateLimiter(0.25, 1, 0) // a token every 4 s
	k := rlKey{str: "dtls|192.0.2.7:5684"}
	t0 := time.Unix(1000, 0).UnixNano()
	if v, _, _ := l.take(k, t0); v != rateAllow {
		t.Fatal("first request refused")
	}
	// 1 s later the next token is 3 s away.
	if v, age, _ := l.take(k, t0+int64(time.Second)); v != rateReply || age != 3 {
		t.Fatalf("verdict %d Max-Age %d, want reply with 3", v, age)
	}
	// 1.5 s later it is 2.5 s away, rounded up to 3 — but the source was
	// told at t0+1s for 3 s, so this one is dropped.
	if v, _, _ := l.take(k, t0+int64(1500*time.Millisecond)); v != rateDrop {
		t.Fatalf("verdict %d, want drop", v)
	}
}

func TestRateLimiterBurstZeroMeansRate(t *testing.T) {
	l := newRateLimiter(5, 0, 0)
	k := rlKey{ip: netip.MustParseAddr("2001:db8::1")}
	allowed := 0
	for range 20 {
		if v, _, _ := l.take(k, 1); v == rateAllow {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("allowed %d at once, want the rate (5)", allowed)
	}
	if newRateLimiter(0, 10, 0) != nil || newRateLimiter(-1, 0, 0) != nil {
		t.Fatal("rate <= 0 must turn the limiter off")
	}
}

func TestRateLimiterTableIsBounded(t *testing.T) {
	l := newRateLimiter(1, 1, 16)
	slots := len(l.sets) * rlWays
	if slots != 16 {
		t.Fatalf("%d slots for 16 sources", slots)
	}
	now := time.Unix(1000, 0).UnixNano()
	evictions := 0
	// 10,000 distinct (spoofed) sources, each spending its only token: every
	// bucket stays live, so past the table's size each new one evicts.
	for i := range 10000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		v, _, ev := l.take(rlKey{ip: a}, now)
		if v != rateAllow {
			t.Fatalf("source %d refused on its first request", i)
		}
		if ev {
			evictions++
		}
	}
	if len(l.sets)*rlWays != slots {
		t.Fatal("table grew")
	}
	if evictions < 10000-slots {
		t.Fatalf("%d evictions, want at least %d", evictions, 10000-slots)
	}
	// Once the buckets are full again their slots are reused without an
	// eviction being counted.
	later := now + int64(2*time.Second)
	for i := range 100 {
		a := netip.AddrFrom4([4]byte{11, 0, 0, byte(i)})
		if _, _, ev := l.take(rlKey{ip: a}, later+int64(i)); ev && i < 8 {
			t.Fatalf("source %d evicted a full bucket", i)
		}
	}
}

func TestIsRequestHeader(t *testing.T) {
	for _, c := range []struct {
		b    []byte
		want bool
	}{
		{[]byte{0x40, 0x01, 0, 1}, true},  // CON GET
		{[]byte{0x50, 0x02, 0, 1}, true},  // NON POST
		{[]byte{0x40, 0x00, 0, 1}, false}, // CON empty (ping)
		{[]byte{0x60, 0x45, 0, 1}, false}, // ACK 2.05
		{[]byte{0x70, 0x00, 0, 1}, false}, // RST
		{[]byte{0x50, 0x45, 0, 1}, false}, // NON 2.05 (notification)
		{[]byte{0x80, 0x01, 0, 1}, false}, // version 2
		{[]byte{0x40, 0x01, 0}, false},    // short
		{[]byte{0x40, 0xe1, 0, 1}, false}, // class 7
	} {
		if got := isRequestHeader(c.b); got != c.want {
			t.Errorf("% x: %v, want %v", c.b, got, c.want)
		}
	}
}

// TestRateLimitAnswers429ThenDropsWhileAnotherSourceIsServed floods a server
// from one loopback address and checks the flooder gets a 4.29 with Max-Age, no larger
// than its request, once, and is otherwise dropped, while a source on
// another loopback address is answered every time.
func TestRateLimitAnswers429ThenDropsWhileAnotherSourceIsServed(t *testing.T) {
	mux := NewServeMux()
	mux.HandleFunc("POST /in", func(w ResponseWriter, r *Request) { w.SetCode(message.Changed) })
	srv, addr := startServer(t, mux, ServerOptions{EndpointOptions: fastOpts(), RateLimit: 2, RateBurst: 5})
	// Each round uses fresh loopback addresses, so buckets start full.
	peerOn := func(ip net.IP) *rawPeer {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
		if err != nil {
			t.Skipf("loopback address %v: %v", ip, err)
		}
		t.Cleanup(func() { c.Close() })
		return &rawPeer{t: t, conn: c, to: addr}
	}
	for round, typ := range []message.Type{message.Confirmable, message.NonConfirmable} {
		flooder := peerOn(net.IPv4(127, 0, 0, byte(10+round)))
		good := peerOn(net.IPv4(127, 0, 0, byte(20+round)))
		before := srv.Stats()
		const n = 200
		for i := range n {
			flooder.sendMsg(&message.Message{Type: typ, Code: message.POST, MessageID: uint16(i), Token: []byte{1, 2},
				Options: message.Options{}.Add(message.URIPath, []byte("in")), Payload: []byte("0123456789")})
		}
		served, tooMany := 0, 0
		for {
			m, _, ok := flooder.recv(300 * time.Millisecond)
			if !ok {
				break
			}
			switch m.Code {
			case message.Changed:
				served++
			case message.TooManyRequests:
				tooMany++
				if age, err := m.Options.Uint(message.MaxAge); err != nil || age < 1 {
					t.Errorf("%v: 4.29 with Max-Age %d (%v)", typ, age, err)
				}
				b, _ := m.MarshalBinary()
				if len(b) > 4+2+2+2+10 {
					t.Errorf("%v: 4.29 of %d bytes is larger than the request", typ, len(b))
				}
				if typ == message.Confirmable && m.Type != message.Acknowledgement {
					t.Errorf("4.29 to a CON as %v", m.Type)
				}
			}
		}
		if tooMany < 1 || tooMany > 2 {
			t.Errorf("%v: %d answers 4.29, want one (at most one per Max-Age period)", typ, tooMany)
		}
		if served > 5+4 {
			t.Errorf("%v: %d of %d flood requests served with a limit of 2/s burst 5", typ, served, n)
		}
		// The other source is served while the flooder is still over its limit.
		for i := range 5 {
			good.sendMsg(&message.Message{Type: message.Confirmable, Code: message.POST, MessageID: uint16(1000 + i), Token: []byte{9},
				Options: message.Options{}.Add(message.URIPath, []byte("in"))})
			if m := good.mustRecv(2 * time.Second); m.Code != message.Changed {
				t.Fatalf("second source got %v", m.Code)
			}
		}
		testkit.Eventually(t, 2*time.Second, "refusals counted", func() bool {
			st := srv.Stats()
			return st.RateLimited-before.RateLimited >= uint64(n-served) && st.RateLimitReplies-before.RateLimitReplies == uint64(tooMany)
		})
		flooder.expectSilence(10 * time.Millisecond)
	}
}

// TestRateLimitNeverAnswersLargerThanTheRequest: a request too small to
// carry a 4.29 with Max-Age is dropped without an answer.
func TestRateLimitNeverAnswersLargerThanTheRequest(t *testing.T) {
	srv, addr := startServer(t, NotFoundHandler(), ServerOptions{EndpointOptions: fastOpts(), RateLimit: 1, RateBurst: 1})
	p := newRawPeer(t, addr)
	p.send([]byte{0x40, 0x01, 0, 1}) // CON GET, 4 bytes: served (4.04)
	if m := p.mustRecv(2 * time.Second); m.Code != message.NotFound {
		t.Fatalf("first request: %v", m.Code)
	}
	p.send([]byte{0x40, 0x01, 0, 2}) // over the limit; a 4.29 would be 7 bytes
	p.expectSilence(200 * time.Millisecond)
	st := srv.Stats()
	if st.RateLimited != 1 || st.RateLimitReplies != 0 {
		t.Fatalf("rate limited %d, replies %d", st.RateLimited, st.RateLimitReplies)
	}
}

// BenchmarkRateLimitDrop measures what a datagram from a source over its
// limit costs the reader: from serveDatagram to the silent drop.
func BenchmarkRateLimitDrop(b *testing.B) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: NotFoundHandler(), Options: ServerOptions{RateLimit: 0.001, RateBurst: 1}}
	done := make(chan error, 1)
	go func() { done <- s.Serve(conn) }()
	defer func() {
		_ = s.Close()
		<-done
	}()
	for len(s.Endpoints()) == 0 {
		time.Sleep(time.Millisecond)
	}
	e := s.Endpoints()[0]
	req := message.Message{Type: message.NonConfirmable, Code: message.POST, Token: []byte{1, 2, 3, 4}, Payload: make([]byte, 64)}
	req.Options = req.Options.SetPath("/telemetry/flood/temp")
	wire, err := req.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	r := &reader{scratch: make([]byte, 0, 256), out: make([]byte, 0, 256)}
	from := udpPeer(netip.MustParseAddrPort("192.0.2.1:5683"))
	e.serveDatagram(r, wire, from) // spends the only token
	e.serveDatagram(r, wire, from) // 4.29 (written to a documentation address)
	b.ReportAllocs()
	for b.Loop() {
		e.serveDatagram(r, wire, from)
	}
	if e.Stats().RateLimited.Load() < uint64(b.N) {
		b.Fatalf("rate limited %d of %d", e.Stats().RateLimited.Load(), b.N)
	}
}

// FuzzRateLimitAnswer feeds arbitrary datagrams to the rate limiter's
// header check and answer: whatever comes in, a request is recognised only
// by a valid request header, and an answer is a well-formed 4.29 (or an
// empty ACK) no larger than the datagram it answers.
func FuzzRateLimitAnswer(f *testing.F) {
	f.Add([]byte{0x42, 0x01, 0x12, 0x34, 0xaa, 0xbb, 0xb4, 't', 'e', 'm', 'p'}, uint32(1))
	f.Add([]byte{0x51, 0x02, 0, 1, 0x7, 0xd2, 0x88, 0x00, 0xff, 'x'}, uint32(300))
	f.Add([]byte{0x40, 0x01, 0, 1}, uint32(1))
	f.Fuzz(func(t *testing.T, data []byte, maxAge uint32) {
		req := isRequestHeader(data)
		var m message.Message
		if err := m.Unmarshal(data); err != nil {
			return
		}
		if req != (m.Code.IsRequest() && (m.Type == message.Confirmable || m.Type == message.NonConfirmable)) {
			t.Fatalf("header check %v for %v %v", req, m.Type, m.Code)
		}
		if !req {
			return
		}
		out, ok := appendTooMany(nil, &m, len(data), maxAge, 7)
		if !ok {
			return
		}
		if len(out) > len(data) {
			t.Fatalf("answer of %d bytes to a request of %d", len(out), len(data))
		}
		a, err := message.Decode(out)
		if err != nil {
			t.Fatalf("answer % x does not decode: %v", out, err)
		}
		if a.Code == message.Empty {
			if a.Type != message.Acknowledgement || m.Type != message.Confirmable {
				t.Fatalf("empty %v to a %v", a.Type, m.Type)
			}
			return
		}
		age, err := a.Options.Uint(message.MaxAge)
		if a.Code != message.TooManyRequests || err != nil || age != maxAge || string(a.Token) != string(m.Token) {
			t.Fatalf("answer %v Max-Age %d (%v), want 4.29 with %d and token % x", a, age, err, maxAge, m.Token)
		}
	})
}

// TestRateLimitLogIsBounded: a long flood of refusals is logged once per
// interval, not per datagram, and counted every time.
func TestRateLimitLogIsBounded(t *testing.T) {
	var lines atomic.Int64
	log := slog.New(countHandler{n: &lines})
	opts := fastOpts()
	opts.Logger = log
	srv, addr := startServer(t, NotFoundHandler(), ServerOptions{EndpointOptions: opts, RateLimit: 0.001, RateBurst: 1})
	p := newRawPeer(t, addr)
	// In groups of 50, so the socket buffer never overflows.
	for i := range 500 {
		p.send([]byte{0x50, 0x01, byte(i >> 8), byte(i)})
		if i%50 == 49 {
			testkit.Eventually(t, 5*time.Second, "datagrams read", func() bool { return srv.Stats().Received == uint64(i+1) })
		}
	}
	if st := srv.Stats(); st.RateLimited != 499 {
		t.Fatalf("%d of 500 refused, want 499", st.RateLimited)
	}
	if n := lines.Load(); n != 1 {
		t.Fatalf("%d warnings for 499 refusals within %v, want 1", n, rateLogEvery)
	}
}

// countHandler counts records at warn level and above.
type countHandler struct{ n *atomic.Int64 }

func (h countHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h countHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h countHandler) WithGroup(string) slog.Handler                { return h }
