package coapside

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/observe"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// counterResource is an observable resource whose value the test changes.
type counterResource struct {
	mu    sync.Mutex
	value []byte
	code  message.Code
}

func (c *counterResource) set(v []byte) {
	c.mu.Lock()
	c.value = v
	c.mu.Unlock()
}

func (c *counterResource) ServeCOAP(w ResponseWriter, _ *Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.code != 0 {
		w.SetCode(c.code)
		return
	}
	w.SetContentFormat(message.TextPlain)
	*w.Options() = w.Options().SetUint(message.MaxAge, 30)
	_, _ = w.Write(c.value)
}

// startObserveServer serves an observable /obs on 127.0.0.1:0 and runs the
// notifier until cleanup.
func startObserveServer(t *testing.T, opts ObserveOptions, res Handler) (*ObserveServer, *net.UDPAddr) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startObserveServerOn(t, conn, opts, res)
}

// startObserveServerOn is startObserveServer on conn.
func startObserveServerOn(t *testing.T, conn net.PacketConn, opts ObserveOptions, res Handler) (*ObserveServer, *net.UDPAddr) {
	t.Helper()
	eo := tolerantOpts() // CON notifications give up after about 3 s
	eo.SeparateAfter = time.Second
	return startObserveServerWith(t, conn, opts, eo, res)
}

// startObserveServerWith is startObserveServerOn with the endpoint's
// transmission parameters eo.
func startObserveServerWith(t *testing.T, conn net.PacketConn, opts ObserveOptions, eo EndpointOptions, res Handler) (*ObserveServer, *net.UDPAddr) {
	t.Helper()
	obs, err := NewObserveServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- obs.Run(ctx) }()
	mux := NewServeMux()
	mux.Handle("GET /obs", obs.Observable(res))
	_, addr := startServerOn(t, conn, mux, ServerOptions{EndpointOptions: eo})
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return obs, addr
}

// register sends GET /obs with Observe=0 and returns the response.
func register(t *testing.T, p *rawPeer, mid uint16, token []byte, extra message.Options) *message.Message {
	t.Helper()
	m := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: mid, Token: token}
	m.Options = extra.SetPath("/obs").SetUint(message.Observe, observe.Register)
	p.sendMsg(m)
	resp := p.mustRecv(2 * time.Second)
	if echo, ok := echoChallenge(resp.Code, resp.Options); ok {
		// The server accepts a registration only from a source that
		// proved its address (RFC 9175 §2.4): repeat it with the Echo.
		if resp.MessageID != mid {
			t.Fatalf("challenge answers mid %d, sent %d", resp.MessageID, mid)
		}
		mid ^= 0x8000
		m.MessageID = mid
		m.Options = m.Options.SetEcho(echo)
		p.sendMsg(m)
		resp = p.mustRecv(2 * time.Second)
	}
	if resp.Type != message.Acknowledgement || resp.MessageID != mid || !bytes.Equal(resp.Token, token) {
		t.Fatalf("registration answer %v", resp)
	}
	return resp
}

func TestObserveServerRegisterNotify(t *testing.T) {
	res := &counterResource{value: []byte("0")}
	obs, addr := startObserveServer(t, ObserveOptions{ConEvery: 100}, res)
	p := newRawPeer(t, addr)
	tok := []byte{1, 2, 3, 4}
	resp := register(t, p, 1, tok, nil)
	seq0, ok := resp.Options.Observe()
	if !ok || resp.Code != message.Content || string(resp.Payload) != "0" {
		t.Fatalf("registration response %v (Observe %v)", resp, ok)
	}
	if n := obs.Observers("/obs"); n != 1 {
		t.Fatalf("observers %d", n)
	}
	last := seq0
	for i := 1; i <= 3; i++ {
		v := []byte(strconv.Itoa(i))
		res.set(v)
		if n := obs.Notify("/obs"); n != 1 {
			t.Fatalf("Notify reached %d observers", n)
		}
		m := p.mustRecv(2 * time.Second)
		seq, ok := m.Options.Observe()
		switch {
		case m.Type != message.NonConfirmable:
			t.Errorf("notification %d type %v, want NON", i, m.Type)
		case !bytes.Equal(m.Token, tok):
			t.Errorf("notification token % x", m.Token)
		case !ok || !observe.Newer(last, seq):
			t.Errorf("notification %d Observe %d (present %v) not newer than %d", i, seq, ok, last)
		case !bytes.Equal(m.Payload, v):
			t.Errorf("notification payload %q, want %q", m.Payload, v)
		case m.Options.MaxAge() != 30:
			t.Errorf("Max-Age %d", m.Options.MaxAge())
		}
		if cf, ok := m.Options.ContentFormat(); !ok || cf != message.TextPlain {
			t.Errorf("Content-Format %v %v", cf, ok)
		}
		last = seq
	}
	// GET with Observe=1 deregisters (RFC 7641 §3.6).
	dm := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: 9, Token: tok}
	dm.Options = dm.Options.SetPath("/obs").SetUint(message.Observe, observe.Deregister)
	p.sendMsg(dm)
	if r := p.mustRecv(2 * time.Second); r.Options.Has(message.Observe) || r.Code != message.Content {
		t.Errorf("deregistration response %v", r)
	}
	if n := obs.Observers("/obs"); n != 0 {
		t.Fatalf("observers after deregistration %d", n)
	}
	if n := obs.Notify("/obs"); n != 0 {
		t.Errorf("Notify after deregistration reached %d", n)
	}
	p.expectSilence(100 * time.Millisecond)
}

func TestObserveServerDeregisterOnReaction(t *testing.T) {
	rst := func(p *rawPeer, m *message.Message) {
		p.sendMsg(&message.Message{Type: message.Reset, MessageID: m.MessageID})
	}
	tests := []struct {
		name     string
		conEvery int
		wantType message.Type
		answer   func(p *rawPeer, m *message.Message) // reaction to the notification
		reason   error
	}{
		{"RST to CON", 1, message.Confirmable, rst, observe.ErrReset},
		{"RST to NON", 100, message.NonConfirmable, rst, observe.ErrReset},
		{"no ACK", 1, message.Confirmable, func(*rawPeer, *message.Message) {}, observe.ErrTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reasons := make(chan error, 4)
			res := &counterResource{value: []byte("a")}
			obs, addr := startObserveServer(t, ObserveOptions{
				ConEvery:     tc.conEvery,
				OnDeregister: func(_ observe.Observer, r error) { reasons <- r },
			}, res)
			p := newRawPeer(t, addr)
			register(t, p, 1, []byte{7}, nil)
			obs.Notify("/obs")
			m := p.mustRecv(2 * time.Second)
			if m.Type != tc.wantType {
				t.Fatalf("notification type %v, want %v", m.Type, tc.wantType)
			}
			tc.answer(p, m)
			select {
			case r := <-reasons:
				if !errors.Is(r, tc.reason) {
					t.Errorf("reason %v, want %v", r, tc.reason)
				}
			case <-time.After(6 * time.Second):
				t.Fatal("observer not removed")
			}
			if n := obs.Observers("/obs"); n != 0 {
				t.Errorf("observers %d", n)
			}
		})
	}
}

// lateWriteConn is a socket whose writes return only after delay: the
// datagram is on the wire, and the peer's answer can arrive, before the
// writer learns that it was sent.
type lateWriteConn struct {
	net.PacketConn
	delay time.Duration
}

func (c lateWriteConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := c.PacketConn.WriteTo(b, addr)
	time.Sleep(c.delay)
	return n, err
}

// TestObserveServerResetOvertakesWrite answers a NON notification with RST
// while the server's write call is still returning: the observer is removed
// all the same.
func TestObserveServerResetOvertakesWrite(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reasons := make(chan error, 4)
	res := &counterResource{value: []byte("a")}
	obs, addr := startObserveServerOn(t, lateWriteConn{conn, 100 * time.Millisecond}, ObserveOptions{
		ConEvery:     100,
		OnDeregister: func(_ observe.Observer, r error) { reasons <- r },
	}, res)
	p := newRawPeer(t, addr)
	register(t, p, 1, []byte{7}, nil)
	obs.Notify("/obs")
	m := p.mustRecv(2 * time.Second)
	if m.Type != message.NonConfirmable {
		t.Fatalf("notification type %v, want NON", m.Type)
	}
	p.sendMsg(&message.Message{Type: message.Reset, MessageID: m.MessageID})
	select {
	case r := <-reasons:
		if !errors.Is(r, observe.ErrReset) {
			t.Errorf("reason %v, want %v", r, observe.ErrReset)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("observer not removed by an RST that arrived during the write")
	}
}

func TestObserveServerErrorResponseDoesNotRegister(t *testing.T) {
	res := &counterResource{code: message.NotFound}
	obs, addr := startObserveServer(t, ObserveOptions{}, res)
	p := newRawPeer(t, addr)
	resp := register(t, p, 1, []byte{1}, nil)
	if resp.Code != message.NotFound || resp.Options.Has(message.Observe) {
		t.Errorf("response %v", resp)
	}
	if n := obs.Observers("/obs"); n != 0 {
		t.Errorf("observers %d after 4.04", n)
	}
}

func TestObserveServerBlockwiseNotification(t *testing.T) {
	body := bigBody(300)
	res := &counterResource{value: body}
	obs, addr := startObserveServer(t, ObserveOptions{}, res)
	p := newRawPeer(t, addr)
	tok := []byte{9, 9}
	// The registration asks for 64-byte blocks.
	resp := register(t, p, 1, tok, message.Options{}.Set(message.Block2, blockOpt(t, 0, false, 2)))
	b2, ok := respBlock(t, resp, message.Block2)
	if !ok || b2.Num != 0 || !b2.More || b2.SZX != 2 || !resp.Options.Has(message.Observe) {
		t.Fatalf("registration response Block2 %v %v, Observe %v", b2, ok, resp.Options.Has(message.Observe))
	}
	next := append([]byte(nil), body...)
	next[0] = 'Z'
	res.set(next)
	obs.Notify("/obs")
	n := p.mustRecv(2 * time.Second)
	nb, ok := respBlock(t, n, message.Block2)
	etag, hasTag := n.Options.ETag()
	if !ok || nb.Num != 0 || !nb.More || nb.SZX != 2 || !hasTag || !bytes.Equal(n.Payload, next[:64]) {
		t.Fatalf("notification Block2 %v %v ETag %v payload %d", nb, ok, hasTag, len(n.Payload))
	}
	if sz, err := n.Options.Uint(message.Size2); err != nil || sz != 300 {
		t.Errorf("Size2 %d %v", sz, err)
	}
	// The rest is fetched with plain GETs carrying Block2 (RFC 7959 §3.4).
	got := append([]byte(nil), n.Payload...)
	for num := uint32(1); ; num++ {
		r := blockRequest(t, p, uint16(10+num), message.GET, "/obs", message.Options{}.Set(message.Block2, blockOpt(t, num, false, 2)), nil)
		rb, _ := respBlock(t, r, message.Block2)
		if tag, _ := r.Options.ETag(); !bytes.Equal(tag, etag) {
			t.Fatalf("block %d ETag % x, want % x", num, tag, etag)
		}
		if r.Options.Has(message.Observe) {
			t.Fatalf("block %d carries Observe", num)
		}
		got = append(got, r.Payload...)
		if !rb.More {
			break
		}
	}
	if !bytes.Equal(got, next) {
		t.Errorf("reassembled %d bytes differ", len(got))
	}
	if obs.Observers("/obs") != 1 {
		t.Error("block fetches changed the registration")
	}
}

func TestObserveServerSlowObserverLatestWins(t *testing.T) {
	res := &counterResource{value: []byte("0")}
	obs, addr := startObserveServer(t, ObserveOptions{ConEvery: 1}, res)
	slow := newRawPeer(t, addr)
	fast := newRawPeer(t, addr)
	register(t, slow, 1, []byte{1}, nil)
	register(t, fast, 2, []byte{2}, nil)
	for i := 1; i <= 5; i++ {
		res.set([]byte(strconv.Itoa(i)))
		obs.Notify("/obs")
		// fast acknowledges every CON at once; slow never does.
		m := fast.mustRecv(2 * time.Second)
		fast.sendMsg(&message.Message{Type: message.Acknowledgement, MessageID: m.MessageID})
		if string(m.Payload) != strconv.Itoa(i) {
			t.Fatalf("fast observer got %q, want %d", m.Payload, i)
		}
	}
	// slow has the first notification in flight (retransmitted); the
	// others were superseded while it waited.
	first := slow.mustRecv(time.Second)
	if string(first.Payload) != "1" {
		t.Errorf("slow observer first got %q", first.Payload)
	}
	if st := obs.Stats(); st.Superseded == 0 {
		t.Errorf("no superseded states for the slow observer: %+v", st)
	}
}

// TestObserveServerFullQueueDowngradesToNON registers more observers from
// one client than its NSTART queue holds. With every notification
// confirmable and none acknowledged, one CON is in flight, the queue fills,
// and the overflow still reaches the client, as NON.
func TestObserveServerFullQueueDowngradesToNON(t *testing.T) {
	res := &counterResource{value: []byte("v")}
	obs, addr := startObserveServer(t, ObserveOptions{ConEvery: 1}, res)
	p := newRawPeer(t, addr)
	const n = DefaultMaxQueuePerPeer + 10
	for i := range n {
		register(t, p, uint16(i+1), []byte{byte(i)}, nil)
	}
	obs.Notify("/obs")
	non := map[byte]bool{}
	con := map[byte]bool{}
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); {
		m, _, ok := p.recv(time.Until(deadline))
		if !ok {
			break
		}
		if m.Type == message.Confirmable {
			con[m.Token[0]] = true // never acknowledged: the queue stays full
		} else {
			non[m.Token[0]] = true
		}
	}
	want := n - 1 - DefaultMaxQueuePerPeer
	if len(con) != 1 || len(non) != want || obs.Downgraded() != uint64(want) {
		t.Errorf("%d CON, %d NON observers reached, Downgraded %d; want 1, %d, %d", len(con), len(non), obs.Downgraded(), want, want)
	}
}

// TestObserveServerReregistrationSameToken re-registers with the same token
// (RFC 7641 §3.3.1, §4.1): the registration is replaced, the sequence
// continues and notifications keep flowing.
func TestObserveServerReregistrationSameToken(t *testing.T) {
	res := &counterResource{value: []byte("a")}
	obs, addr := startObserveServer(t, ObserveOptions{}, res)
	p := newRawPeer(t, addr)
	tok := []byte{5, 5}
	r1 := register(t, p, 1, tok, nil)
	r2 := register(t, p, 2, tok, nil)
	s1, _ := r1.Options.Observe()
	s2, ok := r2.Options.Observe()
	if !ok || !observe.Newer(s1, s2) {
		t.Errorf("re-registration Observe %d after %d", s2, s1)
	}
	if n := obs.Observers("/obs"); n != 1 {
		t.Fatalf("observers %d after re-registration", n)
	}
	res.set([]byte("b"))
	obs.Notify("/obs")
	m := p.mustRecv(2 * time.Second)
	if string(m.Payload) != "b" || !bytes.Equal(m.Token, tok) {
		t.Errorf("notification after re-registration %v", m)
	}
}

// TestObserveServerChallengeAnsweredTwice: a registration's retransmission
// crosses the 4.01 + Echo challenge, the duplicate gets the same challenge
// again (RFC 7252 §4.5), and the client (libcoap does this) repeats the
// registration for each copy, each time with a new token. The second
// answer to the challenge replaces the first: the client is one observer
// and hears each change once.
func TestObserveServerChallengeAnsweredTwice(t *testing.T) {
	res := &counterResource{value: []byte("a")}
	obs, addr := startObserveServer(t, ObserveOptions{ConEvery: 100}, res)
	p := newRawPeer(t, addr)
	first := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: 1, Token: []byte{1}}
	first.Options = message.Options{}.SetPath("/obs").SetUint(message.Observe, observe.Register)
	var echo []byte
	for copyN := range 2 {
		p.sendMsg(first)
		c := p.mustRecv(2 * time.Second)
		v, ok := echoChallenge(c.Code, c.Options)
		if !ok || c.MessageID != 1 || (echo != nil && !bytes.Equal(v, echo)) {
			t.Fatalf("copy %d of the registration answered %v", copyN, c)
		}
		echo = v
	}
	var tok []byte
	for i, mid := range []uint16{2, 3} {
		tok = []byte{byte(mid), 0, 0, 0, 0, 0, 2}
		m := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: mid, Token: tok}
		m.Options = message.Options{}.SetPath("/obs").SetUint(message.Observe, observe.Register).SetEcho(echo)
		p.sendMsg(m)
		r := p.mustRecv(2 * time.Second)
		if _, ok := r.Options.Observe(); !ok || r.Code != message.Content || !bytes.Equal(r.Token, tok) {
			t.Fatalf("answer %d to the challenge: %v", i, r)
		}
	}
	if n := obs.Observers("/obs"); n != 1 {
		t.Errorf("observers %d after one client answered one challenge twice, want 1", n)
	}
	res.set([]byte("b"))
	obs.Notify("/obs")
	m := p.mustRecv(2 * time.Second)
	if string(m.Payload) != "b" || !bytes.Equal(m.Token, tok) {
		t.Errorf("notification %v, want b with the latest token % x", m, tok)
	}
	if m, _, ok := p.recv(200 * time.Millisecond); ok {
		t.Errorf("the change was notified twice: also %v", m)
	}
}

// TestObserveServerEndpointClosed closes the server an observer registered
// on: the next notification finds the endpoint gone and removes it.
func TestObserveServerEndpointClosed(t *testing.T) {
	for _, conEvery := range []int{1, 100} {
		t.Run(strconv.Itoa(conEvery), func(t *testing.T) {
			obs, err := NewObserveServer(ObserveOptions{ConEvery: conEvery})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- obs.Run(ctx) }()
			defer func() {
				cancel()
				<-done
			}()
			mux := NewServeMux()
			mux.Handle("GET /obs", obs.Observable(&counterResource{value: []byte("v")}))
			conn, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &Server{Handler: mux, Options: ServerOptions{EndpointOptions: serverTestOpts()}}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(conn) }()
			testkit.Eventually(t, time.Second, "server start", func() bool { return len(srv.Endpoints()) == 1 })
			p := newRawPeer(t, conn.LocalAddr().(*net.UDPAddr))
			register(t, p, 1, []byte{1}, nil)
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
			<-served
			obs.Notify("/obs")
			testkit.Eventually(t, 2*time.Second, "observer removal", func() bool { return obs.Observers("/obs") == 0 })
		})
	}
}

// TestObserveServerLimitAnswersWithoutObserve: beyond MaxObservers a
// registration is answered like a plain GET, so the client polls instead
// (RFC 7641 §4.1).
func TestObserveServerLimitAnswersWithoutObserve(t *testing.T) {
	res := &counterResource{value: []byte("v")}
	obs, addr := startObserveServer(t, ObserveOptions{MaxObservers: 1}, res)
	p := newRawPeer(t, addr)
	if r := register(t, p, 1, []byte{1}, nil); !r.Options.Has(message.Observe) {
		t.Fatal("first registration refused")
	}
	r := register(t, p, 2, []byte{2}, nil)
	if r.Options.Has(message.Observe) || r.Code != message.Content || string(r.Payload) != "v" {
		t.Errorf("registration over the limit answered %v", r)
	}
	if n := obs.Observers("/obs"); n != 1 {
		t.Errorf("observers %d", n)
	}
}

// TestObserveServerNotifyStateWithoutContentFormat: a state without a
// Content-Format is notified without the option, not as text/plain.
func TestObserveServerNotifyStateWithoutContentFormat(t *testing.T) {
	res := &counterResource{value: []byte("0")}
	obs, addr := startObserveServer(t, ObserveOptions{ConEvery: 100}, res)
	p := newRawPeer(t, addr)
	register(t, p, 1, []byte{5, 6}, nil)
	for _, tc := range []struct {
		st   observe.State
		want bool
	}{
		{observe.State{Payload: []byte{0xff}, NoContentFormat: true}, false},
		{observe.State{Payload: []byte("x"), ContentFormat: uint16(message.AppJSON)}, true},
	} {
		if n := obs.NotifyState("/obs", tc.st); n != 1 {
			t.Fatalf("NotifyState reached %d observers", n)
		}
		m := p.mustRecv(2 * time.Second)
		if _, has := m.Options.ContentFormat(); has != tc.want {
			t.Fatalf("state %+v: Content-Format present %v, want %v", tc.st, has, tc.want)
		}
	}
}
