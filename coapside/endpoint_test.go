package coapside

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// countingHandler answers 2.05 "ok" and counts calls.
type countingHandler struct{ n atomic.Int32 }

func (h *countingHandler) ServeCOAP(w ResponseWriter, r *Request) {
	h.n.Add(1)
	_, _ = w.Write([]byte("ok"))
}

func TestWireReactions(t *testing.T) {
	h := &countingHandler{}
	s, addr := startServer(t, h, ServerOptions{EndpointOptions: fastOpts()})
	tests := []struct {
		name string
		wire []byte
		// want: nil means silence; otherwise the expected reply header.
		wantType *message.Type
		wantCode message.Code
		wantMID  uint16
		counter  func(StatsSnapshot) uint64
	}{
		{
			name:     "empty CON ping gets RST",
			wire:     []byte{0x40, 0x00, 0x12, 0x34},
			wantType: ptr(message.Reset), wantCode: message.Empty, wantMID: 0x1234,
			counter: func(s StatsSnapshot) uint64 { return s.Pings },
		},
		{
			name:     "CON with TKL 9 gets RST",
			wire:     []byte{0x49, 0x01, 0x00, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9},
			wantType: ptr(message.Reset), wantMID: 1,
			counter: func(s StatsSnapshot) uint64 { return s.MalformedRejected },
		},
		{
			name:     "CON with option length past end gets RST",
			wire:     []byte{0x40, 0x01, 0x00, 0x02, 0xb5, 'a'},
			wantType: ptr(message.Reset), wantMID: 2,
			counter: func(s StatsSnapshot) uint64 { return s.MalformedRejected },
		},
		{
			name:     "CON with payload marker and empty payload gets RST",
			wire:     []byte{0x40, 0x02, 0x00, 0x03, 0xff},
			wantType: ptr(message.Reset), wantMID: 3,
			counter: func(s StatsSnapshot) uint64 { return s.MalformedRejected },
		},
		{
			name:     "CON with reserved option nibble 15 gets RST",
			wire:     []byte{0x40, 0x01, 0x00, 0x04, 0xf1, 'a'},
			wantType: ptr(message.Reset), wantMID: 4,
			counter: func(s StatsSnapshot) uint64 { return s.MalformedRejected },
		},
		{
			name:    "truncated header dropped",
			wire:    []byte{0x40, 0x01, 0x00},
			counter: func(s StatsSnapshot) uint64 { return s.MalformedDropped },
		},
		{
			name:    "NON with TKL 15 dropped",
			wire:    []byte{0x5f, 0x01, 0x00, 0x05},
			counter: func(s StatsSnapshot) uint64 { return s.MalformedDropped },
		},
		{
			name:    "NON with reserved nibble dropped",
			wire:    []byte{0x50, 0x01, 0x00, 0x06, 0x1f},
			counter: func(s StatsSnapshot) uint64 { return s.MalformedDropped },
		},
		{
			name:    "version 2 silently ignored",
			wire:    []byte{0x80, 0x01, 0x00, 0x07},
			counter: func(s StatsSnapshot) uint64 { return s.MalformedDropped },
		},
		{
			name: "CON with unknown critical option gets 4.02",
			wire: []byte{
				0x40, 0x01, 0x00, 0x08, // CON GET mid 8
				0xb1, 'x', // delta 11: Uri-Path "x"
				0xd0, 0x01, // delta 13 ext 1 -> 11+14 = 25 (critical, unregistered), len 0
			},
			wantType: ptr(message.Acknowledgement), wantCode: message.BadOption, wantMID: 8,
			counter: func(s StatsSnapshot) uint64 { return s.BadOption },
		},
		{
			name:     "CON in reserved code class 7 gets RST",
			wire:     []byte{0x40, 0xe0, 0x00, 0x09},
			wantType: ptr(message.Reset), wantMID: 9,
			counter: func(s StatsSnapshot) uint64 { return s.MalformedRejected },
		},
		{
			name:    "unmatched ACK ignored",
			wire:    []byte{0x60, 0x00, 0x00, 0x0a},
			counter: func(s StatsSnapshot) uint64 { return s.UnmatchedAcks },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := s.Endpoints()[0]
			before := tt.counter(ep.Stats().Snapshot())
			calls := h.n.Load()
			p := newRawPeer(t, addr)
			p.send(tt.wire)
			if tt.wantType == nil {
				p.expectSilence(60 * time.Millisecond)
			} else {
				m := p.mustRecv(time.Second)
				if m.Type != *tt.wantType || m.Code != tt.wantCode || m.MessageID != tt.wantMID {
					t.Fatalf("reply %v, want %v %v mid=%d", m, *tt.wantType, tt.wantCode, tt.wantMID)
				}
			}
			testkit.Eventually(t, time.Second, "counter", func() bool { return tt.counter(ep.Stats().Snapshot()) == before+1 })
			if h.n.Load() != calls {
				t.Fatal("handler ran for a rejected message")
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestBadOptionNON(t *testing.T) {
	h := &countingHandler{}
	_, addr := startServer(t, h, ServerOptions{EndpointOptions: fastOpts()})
	p := newRawPeer(t, addr)
	p.send([]byte{0x51, 0x01, 0x00, 0x10, 0x77, 0xb1, 'x', 0xd0, 0x01})
	// RFC 7252 §5.4.1: a NON with an unrecognized critical option is rejected.
	m := p.mustRecv(time.Second)
	if m.Type != message.Reset || m.MessageID != 0x0010 {
		t.Fatalf("reply %v", m)
	}
	if h.n.Load() != 0 {
		t.Fatal("handler ran")
	}
}

func TestDuplicateCONReplaysResponse(t *testing.T) {
	h := &countingHandler{}
	s, addr := startServer(t, h, ServerOptions{EndpointOptions: fastOpts()})
	p := newRawPeer(t, addr)
	req := []byte{0x41, 0x01, 0x01, 0x00, 0xaa, 0xb1, 'x'}
	p.send(req)
	first := p.mustRecv(time.Second)
	p.send(req)
	second := p.mustRecv(time.Second)
	b1, _ := first.MarshalBinary()
	b2, _ := second.MarshalBinary()
	if !bytes.Equal(b1, b2) || first.Type != message.Acknowledgement || string(first.Payload) != "ok" {
		t.Fatalf("replay differs or wrong: %v vs %v", first, second)
	}
	if n := h.n.Load(); n != 1 {
		t.Fatalf("handler ran %d times", n)
	}
	st := s.Endpoints()[0].Stats().Snapshot()
	if st.Duplicates != 1 || st.DuplicateReplays != 1 {
		t.Fatalf("stats %+v", st)
	}
	if agg := s.Stats(); agg.Duplicates != 1 || agg.RequestsHandled != 1 {
		t.Fatalf("server stats %+v", agg)
	}
}

func TestDuplicateNONDropped(t *testing.T) {
	h := &countingHandler{}
	_, addr := startServer(t, h, ServerOptions{EndpointOptions: fastOpts()})
	p := newRawPeer(t, addr)
	req := []byte{0x51, 0x01, 0x02, 0x00, 0xbb, 0xb1, 'x'}
	p.send(req)
	resp := p.mustRecv(time.Second)
	if resp.Type != message.NonConfirmable || resp.Code != message.Content {
		t.Fatalf("reply %v", resp)
	}
	p.send(req)
	p.expectSilence(80 * time.Millisecond)
	if n := h.n.Load(); n != 1 {
		t.Fatalf("handler ran %d times", n)
	}
}

func TestSeparateResponseRetransmittedUntilAcked(t *testing.T) {
	release := make(chan struct{})
	h := HandlerFunc(func(w ResponseWriter, r *Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = w.Write([]byte("done"))
	})
	s, addr := startServer(t, h, ServerOptions{EndpointOptions: fastOpts()})
	p := newRawPeer(t, addr)
	req := []byte{0x42, 0x01, 0x03, 0x00, 0xc1, 0xc2, 0xb1, 'x'}
	p.send(req)
	// RFC 7252 §5.2.2: empty ACK first.
	ack := p.mustRecv(time.Second)
	if ack.Type != message.Acknowledgement || ack.Code != message.Empty || ack.MessageID != 0x0300 {
		t.Fatalf("first reply %v, want empty ACK", ack)
	}
	// A duplicate of the request now gets the empty ACK again (§4.5).
	p.send(req)
	if dup := p.mustRecv(time.Second); dup.Type != message.Acknowledgement || dup.Code != message.Empty {
		t.Fatalf("duplicate reply %v", dup)
	}
	close(release)
	resp := p.mustRecv(time.Second)
	if resp.Type != message.Confirmable || resp.Code != message.Content || !bytes.Equal(resp.Token, []byte{0xc1, 0xc2}) || string(resp.Payload) != "done" {
		t.Fatalf("separate response %v", resp)
	}
	// Not acknowledged: the CON response is retransmitted with the same MID.
	again := p.mustRecv(time.Second)
	if again.MessageID != resp.MessageID || again.Type != message.Confirmable {
		t.Fatalf("retransmission %v", again)
	}
	p.send(appendEmpty(nil, message.Acknowledgement, resp.MessageID))
	p.expectSilence(150 * time.Millisecond)
	st := s.Endpoints()[0].Stats().Snapshot()
	if st.SeparateResponses != 1 || st.Retransmissions < 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOverloadReturns503WithMaxAge(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(1)
	var once sync.Once
	h := HandlerFunc(func(w ResponseWriter, r *Request) {
		once.Do(started.Done)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	opts := fastOpts()
	opts.SeparateAfter = time.Second
	s, addr := startServer(t, h, ServerOptions{EndpointOptions: opts, MaxConcurrent: 1, OverloadMaxAge: 7})
	p := newRawPeer(t, addr)
	p.send([]byte{0x40, 0x01, 0x04, 0x00, 0xb1, 'a'})
	started.Wait()
	p.send([]byte{0x41, 0x01, 0x04, 0x01, 0x99, 0xb1, 'b'})
	m := p.mustRecv(time.Second)
	if m.Code != message.ServiceUnavailable || m.MessageID != 0x0401 || m.Options.MaxAge() != 7 {
		t.Fatalf("reply %v max-age %d", m, m.Options.MaxAge())
	}
	close(release)
	if m := p.mustRecv(time.Second); m.MessageID != 0x0400 || m.Code != message.Changed && m.Code != message.Content {
		t.Fatalf("first reply %v", m)
	}
	if s.Endpoints()[0].Stats().Overloaded.Load() != 1 {
		t.Fatal("Overloaded not counted")
	}
}

func TestProxyRequestGets505(t *testing.T) {
	h := &countingHandler{}
	_, addr := startServer(t, h, ServerOptions{EndpointOptions: fastOpts()})
	p := newRawPeer(t, addr)
	m := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: 0x0600}
	m.Options = m.Options.SetString(message.ProxyURI, "coap://example.net/x")
	p.sendMsg(m)
	if r := p.mustRecv(time.Second); r.Code != message.ProxyingNotSupported || r.MessageID != 0x0600 {
		t.Fatalf("reply %v", r)
	}
	if h.n.Load() != 0 {
		t.Fatal("handler ran")
	}
}

func TestHandlerPanicGives500(t *testing.T) {
	h := HandlerFunc(func(w ResponseWriter, r *Request) { panic("boom") })
	_, addr := startServer(t, h, ServerOptions{EndpointOptions: fastOpts()})
	p := newRawPeer(t, addr)
	p.send([]byte{0x40, 0x01, 0x05, 0x00})
	if m := p.mustRecv(time.Second); m.Code != message.InternalServerError {
		t.Fatalf("reply %v", m)
	}
}

func newTestEndpoint(t *testing.T, opts EndpointOptions) *Endpoint {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEndpoint(c, opts)
	t.Cleanup(func() { e.Close() })
	return e
}

func TestSendCONOutcomes(t *testing.T) {
	tests := []struct {
		name    string
		reply   func(p *rawPeer, m *message.Message)
		wantErr error
		wantAck bool
	}{
		{"acknowledged", func(p *rawPeer, m *message.Message) {
			p.send(appendEmpty(nil, message.Acknowledgement, m.MessageID))
		}, nil, true},
		{"reset", func(p *rawPeer, m *message.Message) {
			p.send(appendEmpty(nil, message.Reset, m.MessageID))
		}, ErrReset, false},
		{"timeout", func(p *rawPeer, m *message.Message) {}, ErrTimeout, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEndpoint(t, fastOpts())
			p := newRawPeer(t, nil)
			type res struct {
				ack *message.Message
				err error
			}
			ch := make(chan res, 1)
			go func() {
				n := &message.Message{Type: message.Confirmable, Code: message.Content, Token: []byte{1}, Payload: []byte("22.5")}
				ack, err := e.Send(context.Background(), p.addr(), n)
				ch <- res{ack, err}
			}()
			m, from, ok := p.recv(time.Second)
			if !ok {
				t.Fatal("nothing sent")
			}
			p.to = from
			tt.reply(p, m)
			r := <-ch
			if !errors.Is(r.err, tt.wantErr) || (r.ack != nil) != tt.wantAck {
				t.Fatalf("Send = %v, %v", r.ack, r.err)
			}
		})
	}
}

func TestSendNONReportsReset(t *testing.T) {
	e := newTestEndpoint(t, fastOpts())
	p := newRawPeer(t, nil)
	got := make(chan Outcome, 1)
	n := &message.Message{Type: message.NonConfirmable, Code: message.Content, Token: []byte{2}}
	if err := e.SendAsync(p.addr(), n, func(o Outcome, _ *message.Message) { got <- o }); err != nil {
		t.Fatal(err)
	}
	m, from, _ := p.recv(time.Second)
	p.to = from
	p.send(appendEmpty(nil, message.Reset, m.MessageID))
	select {
	case o := <-got:
		if o != ResetByPeer {
			t.Fatalf("outcome %v", o)
		}
	case <-time.After(time.Second):
		t.Fatal("no outcome")
	}
}

func TestNStartQueuesSecondCON(t *testing.T) {
	e := newTestEndpoint(t, fastOpts()) // NStart 1
	p := newRawPeer(t, nil)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := &message.Message{Type: message.Confirmable, Code: message.Content, Token: []byte{byte(i)}}
			_, _ = e.Send(context.Background(), p.addr(), m)
		}()
	}
	first, from, ok := p.recv(time.Second)
	if !ok {
		t.Fatal("nothing sent")
	}
	p.to = from
	// Until the first is acknowledged, only it (no second MID) is on the wire.
	deadline := time.Now().Add(30 * time.Millisecond)
	for time.Now().Before(deadline) {
		if m, _, ok := p.recv(5 * time.Millisecond); ok && m.MessageID != first.MessageID {
			t.Fatalf("second CON %v sent while first outstanding", m)
		}
	}
	p.send(appendEmpty(nil, message.Acknowledgement, first.MessageID))
	var second *message.Message
	for second == nil {
		m, _, ok := p.recv(time.Second)
		if !ok {
			t.Fatal("second CON never sent")
		}
		if m.MessageID != first.MessageID {
			second = m
		}
	}
	p.send(appendEmpty(nil, message.Acknowledgement, second.MessageID))
	wg.Wait()
}

func TestRegisterTokenRoutesNotifications(t *testing.T) {
	e := newTestEndpoint(t, fastOpts())
	p := newRawPeer(t, e.LocalAddr().(*net.UDPAddr))
	got := make(chan string, 4)
	cancel, err := e.RegisterToken(p.addr(), []byte{0xde, 0xad}, func(resp *message.Message, from net.Addr, err error) bool {
		if err == nil {
			got <- string(resp.Payload)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if _, err := e.RegisterToken(p.addr(), []byte{0xde, 0xad}, nil); !errors.Is(err, ErrTokenInUse) {
		t.Fatalf("duplicate registration err = %v", err)
	}
	// CON notification: ACKed and delivered.
	p.sendMsg(&message.Message{Type: message.Confirmable, Code: message.Content, MessageID: 50, Token: []byte{0xde, 0xad}, Payload: []byte("n1")})
	if ack := p.mustRecv(time.Second); ack.Type != message.Acknowledgement || ack.MessageID != 50 || ack.Code != message.Empty {
		t.Fatalf("ack %v", ack)
	}
	// NON notification: delivered, no reply.
	p.sendMsg(&message.Message{Type: message.NonConfirmable, Code: message.Content, MessageID: 51, Token: []byte{0xde, 0xad}, Payload: []byte("n2")})
	// Unknown token: RST.
	p.sendMsg(&message.Message{Type: message.NonConfirmable, Code: message.Content, MessageID: 52, Token: []byte{0xbe, 0xef}, Payload: []byte("x")})
	if rst := p.mustRecv(time.Second); rst.Type != message.Reset || rst.MessageID != 52 {
		t.Fatalf("unknown token reply %v", rst)
	}
	for _, want := range []string{"n1", "n2"} {
		select {
		case s := <-got:
			if s != want {
				t.Fatalf("got %q want %q", s, want)
			}
		case <-time.After(time.Second):
			t.Fatalf("missing %q", want)
		}
	}
	if e.Stats().UnmatchedResponses.Load() != 1 {
		t.Fatal("UnmatchedResponses not counted")
	}
}

func TestEndpointCloseFailsPending(t *testing.T) {
	opts := fastOpts()
	opts.AckTimeout = time.Hour
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEndpoint(c, opts)
	p := newRawPeer(t, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := e.Send(context.Background(), p.addr(), &message.Message{Type: message.Confirmable, Code: message.Content})
		errc <- err
	}()
	p.mustRecv(time.Second)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestResponseWithUnknownCriticalOptionRejected(t *testing.T) {
	e := newTestEndpoint(t, fastOpts())
	p := newRawPeer(t, e.LocalAddr().(*net.UDPAddr))
	got := make(chan struct{}, 1)
	cancel, err := e.RegisterToken(p.addr(), []byte{0x01}, func(*message.Message, net.Addr, error) bool {
		got <- struct{}{}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	m := &message.Message{Type: message.Confirmable, Code: message.Content, MessageID: 70, Token: []byte{0x01}}
	m.Options = m.Options.Add(25, nil) // critical, unregistered
	p.sendMsg(m)
	if r := p.mustRecv(time.Second); r.Type != message.Reset || r.MessageID != 70 {
		t.Fatalf("reply %v, want RST", r)
	}
	select {
	case <-got:
		t.Fatal("response with unknown critical option delivered")
	case <-time.After(30 * time.Millisecond):
	}
}

func TestSlowHandlerDoesNotHoldUpOthers(t *testing.T) {
	for _, batching := range []bool{true, false} {
		t.Run(fmt.Sprintf("batching=%v", batching), func(t *testing.T) {
			release := make(chan struct{})
			mux := NewServeMux()
			mux.HandleFunc("/slow", func(w ResponseWriter, r *Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			mux.HandleFunc("/fast", func(w ResponseWriter, r *Request) {})
			opts := fastOpts()
			opts.SeparateAfter = 5 * time.Second
			opts.DisableBatching = !batching
			_, addr := startServer(t, mux, ServerOptions{EndpointOptions: opts})
			p := newRawPeer(t, addr)
			slow := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: 1000}
			slow.Options = slow.Options.SetPath("/slow")
			p.sendMsg(slow)
			// Requests sent right behind the slow one often share its read batch.
			const fast = 8
			for i := range fast {
				m := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: uint16(2000 + i)}
				m.Options = m.Options.SetPath("/fast")
				p.sendMsg(m)
			}
			for range fast {
				m := p.mustRecv(time.Second)
				if m.MessageID < 2000 {
					t.Fatalf("unexpected reply %v", m)
				}
			}
			close(release)
			if m := p.mustRecv(time.Second); m.MessageID != 1000 {
				t.Fatalf("slow reply %v", m)
			}
		})
	}
}

func TestNStartHoldsNONRequestUntilResponse(t *testing.T) {
	e := newTestEndpoint(t, fastOpts()) // NStart 1
	p := newRawPeer(t, e.LocalAddr().(*net.UDPAddr))
	got := make(chan string, 2)
	send := func(path string) func() {
		m := &message.Message{Type: message.NonConfirmable, Code: message.GET}
		m.Options = m.Options.SetPath(path)
		cancel, err := e.Exchange(p.addr(), m, func(resp *message.Message, _ net.Addr, err error) bool {
			if err == nil {
				got <- string(resp.Payload)
			}
			return false
		})
		if err != nil {
			t.Fatal(err)
		}
		return cancel
	}
	c1 := send("/one")
	defer c1()
	c2 := send("/two")
	defer c2()
	first := p.mustRecv(time.Second)
	if first.Path() != "/one" {
		t.Fatalf("first request %v", first)
	}
	// RFC 7252 §4.7: the second NON request waits while the first is outstanding.
	p.expectSilence(60 * time.Millisecond)
	p.sendMsg(&message.Message{Type: message.NonConfirmable, Code: message.Content, MessageID: 9, Token: first.Token, Payload: []byte("r1")})
	second := p.mustRecv(time.Second)
	if second.Path() != "/two" {
		t.Fatalf("second request %v", second)
	}
	if s := <-got; s != "r1" {
		t.Fatalf("response %q", s)
	}
	// Cancelling the second frees the slot for a third.
	c2()
	c3 := send("/three")
	defer c3()
	if third := p.mustRecv(time.Second); third.Path() != "/three" {
		t.Fatalf("third request %v", third)
	}
}
