package coapside

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/observe"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// collect returns a callback that forwards notifications to a channel of
// capacity n; when it is full (a test that already failed stopped reading)
// notifications are dropped so the observation can still end.
func collect(n int) (func(Notification), chan Notification) {
	ch := make(chan Notification, n)
	return func(x Notification) {
		select {
		case ch <- x:
		default:
		}
	}, ch
}

func nextNote(t *testing.T, ch chan Notification) Notification {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(2 * time.Second):
		t.Fatal("no notification")
	}
	return Notification{}
}

func noNote(t *testing.T, ch chan Notification, d time.Duration) {
	t.Helper()
	select {
	case n := <-ch:
		t.Fatalf("unexpected notification %q seq %d", n.Payload, n.Seq)
	case <-time.After(d):
	}
}

func TestClientObserveOurServer(t *testing.T) {
	res := &counterResource{value: []byte("0")}
	obs, addr := startObserveServer(t, ObserveOptions{ConEvery: 2}, res)
	c := newBlockClient(t, ClientBlockwiseOptions{})
	fn, ch := collect(16)
	o, err := c.Observe(testCtx(t), fmt.Sprintf("coap://%s/obs", addr), fn)
	if err != nil {
		t.Fatal(err)
	}
	if n := nextNote(t, ch); string(n.Payload) != "0" || !n.HasSeq {
		t.Fatalf("first %q seq %v", n.Payload, n.HasSeq)
	}
	for i := 1; i <= 4; i++ {
		res.set([]byte(strconv.Itoa(i)))
		obs.Notify("/obs")
		if n := nextNote(t, ch); string(n.Payload) != strconv.Itoa(i) {
			t.Fatalf("notification %d: %q", i, n.Payload)
		}
	}
	if err := o.Cancel(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	o.Wait()
	if !errors.Is(o.Err(), ErrCanceled) {
		t.Errorf("Err %v", o.Err())
	}
	// RFC 7641 §3.6: the cancel deregistered on the server.
	if n := obs.Observers("/obs"); n != 0 {
		t.Errorf("server still has %d observers", n)
	}
	res.set([]byte("late"))
	obs.Notify("/obs")
	noNote(t, ch, 100*time.Millisecond)
}

func TestClientObserveContextEndDeregisters(t *testing.T) {
	res := &counterResource{value: []byte("x")}
	obs, addr := startObserveServer(t, ObserveOptions{}, res)
	c := newBlockClient(t, ClientBlockwiseOptions{})
	fn, _ := collect(4)
	ctx, cancel := context.WithCancel(context.Background())
	o, err := c.Observe(ctx, fmt.Sprintf("coap://%s/obs", addr), fn)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	o.Wait()
	testkit.Eventually(t, 2*time.Second, "server deregistration", func() bool { return obs.Observers("/obs") == 0 })
}

func TestClientObserveNotObservableAndErrors(t *testing.T) {
	mux := NewServeMux()
	mux.HandleFunc("GET /plain", func(w ResponseWriter, _ *Request) { _, _ = w.Write([]byte("p")) })
	_, addr := startServer(t, mux, ServerOptions{EndpointOptions: serverTestOpts()})
	c := newBlockClient(t, ClientBlockwiseOptions{})
	fn, ch := collect(4)
	_, err := c.Observe(testCtx(t), fmt.Sprintf("coap://%s/plain", addr), fn)
	if !errors.Is(err, ErrNotObservable) {
		t.Fatalf("err %v, want ErrNotObservable", err)
	}
	if n := nextNote(t, ch); string(n.Payload) != "p" || n.HasSeq {
		t.Errorf("fallback response %q seq %v", n.Payload, n.HasSeq)
	}
	_, err = c.Observe(testCtx(t), fmt.Sprintf("coap://%s/missing", addr), fn)
	if !errors.Is(err, message.NotFound) {
		t.Errorf("missing resource: %v", err)
	}
}

func TestClientObserveServerEndsObservation(t *testing.T) {
	res := &counterResource{value: []byte("v")}
	obs, addr := startObserveServer(t, ObserveOptions{}, res)
	c := newBlockClient(t, ClientBlockwiseOptions{})
	fn, ch := collect(4)
	o, err := c.Observe(testCtx(t), fmt.Sprintf("coap://%s/obs", addr), fn)
	if err != nil {
		t.Fatal(err)
	}
	nextNote(t, ch)
	obs.NotifyState("/obs", observe.State{Code: message.NotFound})
	if n := nextNote(t, ch); n.Code != message.NotFound {
		t.Errorf("final notification %v", n.Code)
	}
	select {
	case <-o.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("observation did not end")
	}
	if err := o.Err(); !errors.Is(err, ErrObservationEnded) || !errors.Is(err, message.NotFound) {
		t.Errorf("Err %v", err)
	}
	o.Wait()
}

func TestClientObserveBlockwiseNotification(t *testing.T) {
	body := bigBody(3000)
	res := &counterResource{value: body}
	obs, addr := startObserveServer(t, ObserveOptions{}, res)
	c := newBlockClient(t, ClientBlockwiseOptions{})
	fn, ch := collect(4)
	o, err := c.Observe(testCtx(t), fmt.Sprintf("coap://%s/obs", addr), fn)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Wait()
	defer o.Cancel(testCtx(t))
	if n := nextNote(t, ch); !bytes.Equal(n.Payload, body) {
		t.Fatalf("first body %d bytes", len(n.Payload))
	}
	next := bytes.ToUpper(body)
	res.set(next)
	obs.Notify("/obs")
	if n := nextNote(t, ch); !bytes.Equal(n.Payload, next) || n.Options.Has(message.Block2) {
		t.Fatalf("notification body %d bytes, Block2 %v", len(n.Payload), n.Options.Has(message.Block2))
	}
}

// fakeObserveServer is a raw socket acting as an observable server, to send
// notifications in any order.
type fakeObserveServer struct {
	*rawPeer
	client *Client
	token  []byte
}

// startFakeObservation observes a raw peer and answers the registration
// with Observe=seq and Max-Age maxAge.
func startFakeObservation(t *testing.T, seq uint32, maxAge uint32, oo ObservationOptions) (*fakeObserveServer, *Observation, chan Notification) {
	t.Helper()
	return startFakeObservationCtx(t, testCtx(t), newBlockClient(t, ClientBlockwiseOptions{}), seq, maxAge, oo)
}

// startFakeObservationCtx is startFakeObservation with the observation's
// context and client.
func startFakeObservationCtx(t *testing.T, ctx context.Context, c *Client, seq uint32, maxAge uint32, oo ObservationOptions) (*fakeObserveServer, *Observation, chan Notification) {
	t.Helper()
	p := newRawPeer(t, c.Endpoint().LocalAddr().(*net.UDPAddr))
	fn, ch := collect(16)
	type res struct {
		o   *Observation
		err error
	}
	done := make(chan res, 1)
	go func() {
		req, _ := NewRequest(message.GET, fmt.Sprintf("coap://%s/s", p.addr()), nil)
		o, err := c.ObserveRequest(ctx, req, fn, oo)
		done <- res{o, err}
	}()
	reg := p.mustRecv(2 * time.Second)
	if v, ok := reg.Options.Observe(); !ok || v != observe.Register || reg.Code != message.GET {
		t.Fatalf("registration %v", reg)
	}
	ack := &message.Message{Type: message.Acknowledgement, Code: message.Content, MessageID: reg.MessageID, Token: reg.Token}
	ack.Options = ack.Options.SetUint(message.Observe, seq).SetUint(message.MaxAge, maxAge)
	ack.Payload = []byte("first")
	p.sendMsg(ack)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if n := nextNote(t, ch); string(n.Payload) != "first" {
		t.Fatalf("first %q", n.Payload)
	}
	return &fakeObserveServer{rawPeer: p, client: c, token: reg.Token}, r.o, ch
}

func (f *fakeObserveServer) notify(mid uint16, typ message.Type, seq uint32, payload string) {
	m := &message.Message{Type: typ, Code: message.Content, MessageID: mid, Token: f.token, Payload: []byte(payload)}
	m.Options = m.Options.SetUint(message.Observe, seq).SetUint(message.MaxAge, 60)
	f.sendMsg(m)
}

func TestClientObserveReorderedAndDuplicate(t *testing.T) {
	f, o, ch := startFakeObservation(t, 10, 60, ObservationOptions{})
	defer func() {
		o.end(ErrCanceled)
		o.Wait()
	}()
	steps := []struct {
		mid     uint16
		seq     uint32
		payload string
		deliver bool
	}{
		{100, 12, "12", true},
		{101, 11, "11 stale", false},         // reordered: older than 12
		{102, 12, "12 again", false},         // same sequence number, new MID
		{100, 12, "12 same MID", false},      // message-layer duplicate
		{103, 13, "13", true},                // fresh
		{104, 13 + 1<<23 + 5, "wrap", false}, // far ahead is stale (RFC 7641 §3.4)
		{105, 14, "14", true},
	}
	for _, s := range steps {
		f.notify(s.mid, message.NonConfirmable, s.seq, s.payload)
		if s.deliver {
			if n := nextNote(t, ch); string(n.Payload) != s.payload || n.Seq != s.seq {
				t.Fatalf("got %q seq %d, want %q", n.Payload, n.Seq, s.payload)
			}
		} else {
			noNote(t, ch, 50*time.Millisecond)
		}
	}
	// Three were stale by sequence number; the repeated message ID never got
	// past the endpoint's deduplication.
	if st, d := o.Stats().Stale.Load(), o.Stats().Delivered.Load(); st != 3 || d != 4 {
		t.Errorf("Stale %d, Delivered %d; want 3, 4", st, d)
	}
	// A CON notification is acknowledged.
	f.notify(106, message.Confirmable, 15, "15")
	if ack := f.mustRecv(time.Second); ack.Type != message.Acknowledgement || ack.MessageID != 106 {
		t.Errorf("CON notification answered %v", ack)
	}
	nextNote(t, ch)
	// A notification with a token nobody registered gets RST.
	m := &message.Message{Type: message.NonConfirmable, Code: message.Content, MessageID: 107, Token: []byte("nobody")}
	m.Options = m.Options.SetUint(message.Observe, 16)
	f.sendMsg(m)
	if rst := f.mustRecv(time.Second); rst.Type != message.Reset || rst.MessageID != 107 {
		t.Errorf("unknown token answered %v", rst)
	}
}

func TestClientObserveReregistration(t *testing.T) {
	// Max-Age 0 and a short margin make the client re-register soon.
	f, o, ch := startFakeObservation(t, 10, 0, ObservationOptions{ReregisterMargin: 80 * time.Millisecond})
	rereg := f.mustRecv(2 * time.Second)
	v, ok := rereg.Options.Observe()
	if rereg.Code != message.GET || !ok || v != observe.Register || !bytes.Equal(rereg.Token, f.token) {
		t.Fatalf("re-registration %v", rereg)
	}
	// Answer it: the observation continues with the same token.
	ack := &message.Message{Type: message.Acknowledgement, Code: message.Content, MessageID: rereg.MessageID, Token: rereg.Token}
	ack.Options = ack.Options.SetUint(message.Observe, 11).SetUint(message.MaxAge, 0)
	ack.Payload = []byte("again")
	f.sendMsg(ack)
	if n := nextNote(t, ch); string(n.Payload) != "again" {
		t.Fatalf("re-registration response %q", n.Payload)
	}
	// The next re-registration is never answered: the CON times out and the
	// observation is reported lost, so the owner can observe again.
	select {
	case <-o.Done():
	case <-time.After(8 * time.Second):
		t.Fatal("observation not ended after unanswered re-registration")
	}
	if !errors.Is(o.Err(), ErrObservationLost) || !errors.Is(o.Err(), ErrTimeout) {
		t.Errorf("Err %v", o.Err())
	}
	if n := o.Stats().Reregistrations.Load(); n != 2 {
		t.Errorf("Reregistrations %d, want 2", n)
	}
	o.Wait()
}

// TestClientObserveReregistrationHeldWhileAsleep: when Max-Age and the
// margin pass while the owner says the server is asleep (a device whose
// radio is off), no re-registration is sent and the observation stays up;
// the owner's Reregister, at the server's wake, sends it.
func TestClientObserveReregistrationHeldWhileAsleep(t *testing.T) {
	var asleep atomic.Bool
	asleep.Store(true)
	f, o, ch := startFakeObservation(t, 10, 0, ObservationOptions{
		ReregisterMargin: 80 * time.Millisecond,
		Asleep:           asleep.Load,
	})
	defer func() {
		o.Cancel(testCtx(t))
		o.Wait()
	}()
	f.expectSilence(500 * time.Millisecond)
	select {
	case <-o.Done():
		t.Fatalf("observation ended while the server slept: %v", o.Err())
	default:
	}
	asleep.Store(false)
	o.Reregister()
	rereg := f.mustRecv(2 * time.Second)
	if v, ok := rereg.Options.Observe(); rereg.Code != message.GET || !ok || v != observe.Register || !bytes.Equal(rereg.Token, f.token) {
		t.Fatalf("re-registration %v", rereg)
	}
	ack := &message.Message{Type: message.Acknowledgement, Code: message.Content, MessageID: rereg.MessageID, Token: rereg.Token, Payload: []byte("awake")}
	ack.Options = ack.Options.SetUint(message.Observe, 11).SetUint(message.MaxAge, 60)
	f.sendMsg(ack)
	if n := nextNote(t, ch); string(n.Payload) != "awake" {
		t.Fatalf("re-registration answer %q", n.Payload)
	}
	if n := o.Stats().Reregistrations.Load(); n != 1 {
		t.Errorf("Reregistrations %d, want 1", n)
	}
}

// TestClientObserveCancelAsleep: cancelling while the owner says the
// server is asleep sends no deregistration (it would only go unanswered,
// holding the caller until ctx ends): the observation ends at once, and
// a later notification is answered RST (RFC 7641 §3.6).
func TestClientObserveCancelAsleep(t *testing.T) {
	f, o, _ := startFakeObservation(t, 10, 60, ObservationOptions{Asleep: func() bool { return true }})
	start := time.Now()
	if err := o.Cancel(testCtx(t)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	o.Wait()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Cancel took %v", d)
	}
	if !errors.Is(o.Err(), ErrCanceled) {
		t.Errorf("Err %v, want ErrCanceled", o.Err())
	}
	f.expectSilence(300 * time.Millisecond)
	f.notify(0x7002, message.NonConfirmable, 11, "late")
	if rst := f.mustRecv(time.Second); rst.Type != message.Reset || rst.MessageID != 0x7002 {
		t.Errorf("notification after the cancel answered %v, want RST", rst)
	}
}

// TestClientObserveReregisterNow: the owner re-registers long before
// Max-Age runs out (a device it knows may have forgotten it). The request
// goes out at once with the same token; its answer, though its Observe
// value is older than the latest (the device restarted its sequence), is
// delivered, and later notifications are judged against it.
func TestClientObserveReregisterNow(t *testing.T) {
	f, o, ch := startFakeObservation(t, 100, 60, ObservationOptions{})
	defer func() {
		o.Cancel(testCtx(t))
		o.Wait()
	}()
	o.Reregister()
	o.Reregister() // one already under way: nothing more is sent
	rereg := f.mustRecv(2 * time.Second)
	if v, ok := rereg.Options.Observe(); rereg.Code != message.GET || !ok || v != observe.Register || !bytes.Equal(rereg.Token, f.token) {
		t.Fatalf("re-registration %v", rereg)
	}
	ack := &message.Message{Type: message.Acknowledgement, Code: message.Content, MessageID: rereg.MessageID, Token: rereg.Token, Payload: []byte("again")}
	ack.Options = ack.Options.SetUint(message.Observe, 3).SetUint(message.MaxAge, 60)
	f.sendMsg(ack)
	if n := nextNote(t, ch); string(n.Payload) != "again" {
		t.Fatalf("re-registration answer %q", n.Payload)
	}
	f.notify(0x7001, message.NonConfirmable, 4, "next")
	if n := nextNote(t, ch); string(n.Payload) != "next" {
		t.Fatalf("notification after the answer %q", n.Payload)
	}
	if n := o.Stats().Reregistrations.Load(); n != 1 {
		t.Errorf("Reregistrations %d, want 1", n)
	}
	select {
	case <-o.Done():
		t.Fatalf("observation ended: %v", o.Err())
	default:
	}
}

// TestClientObserveReregisterReplacesMaxAgeOne: a re-registration Max-Age
// started that goes unanswered (the server slept) is given up when the
// owner re-registers (the server woke): a new GET goes out at once, not
// behind the old one's retransmissions (NSTART 1), and the old one is not
// sent again.
func TestClientObserveReregisterReplacesMaxAgeOne(t *testing.T) {
	f, o, ch := startFakeObservation(t, 100, 1, ObservationOptions{})
	defer func() {
		o.Cancel(testCtx(t))
		o.Wait()
	}()
	old := f.mustRecv(5 * time.Second) // Max-Age ran out: left unanswered
	if v, ok := old.Options.Observe(); old.Code != message.GET || !ok || v != observe.Register {
		t.Fatalf("Max-Age re-registration %v", old)
	}
	o.Reregister()
	// A retransmission of the old one sent before it was given up may
	// come first; the new one follows at once, not after the old one's
	// retransmissions end.
	fresh := f.mustRecv(time.Second)
	for fresh.MessageID == old.MessageID {
		fresh = f.mustRecv(time.Second)
	}
	if v, ok := fresh.Options.Observe(); fresh.Code != message.GET || !ok || v != observe.Register || !bytes.Equal(fresh.Token, f.token) {
		t.Fatalf("owner's re-registration %v, want a GET Observe=0 with the token", fresh)
	}
	o.Reregister() // the owner's own is under way: nothing more
	ack := &message.Message{Type: message.Acknowledgement, Code: message.Content, MessageID: fresh.MessageID, Token: fresh.Token, Payload: []byte("awake")}
	ack.Options = ack.Options.SetUint(message.Observe, 7).SetUint(message.MaxAge, 60)
	f.sendMsg(ack)
	if n := nextNote(t, ch); string(n.Payload) != "awake" {
		t.Fatalf("answer %q", n.Payload)
	}
	// The given-up one is not retransmitted (ACK_TIMEOUT is 2 s and more:
	// a retransmission would come within 3 s; later Max-Age ones may).
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		m, _, ok := f.recv(time.Until(deadline))
		if ok && m.MessageID == old.MessageID {
			t.Fatalf("the given-up re-registration was sent again: %v", m)
		}
	}
	select {
	case <-o.Done():
		t.Fatalf("observation ended: %v", o.Err())
	default:
	}
}

func TestClientObserveRegistrationReset(t *testing.T) {
	// The server rejects the registration with RST: Observe fails with ErrReset.
	c := newTestClient(t)
	p := newRawPeer(t, c.Endpoint().LocalAddr().(*net.UDPAddr))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Observe(testCtx(t), fmt.Sprintf("coap://%s/s", p.addr()), func(Notification) {})
		errc <- err
	}()
	reg := p.mustRecv(2 * time.Second)
	p.sendMsg(&message.Message{Type: message.Reset, MessageID: reg.MessageID})
	if err := <-errc; !errors.Is(err, ErrReset) {
		t.Errorf("err %v, want ErrReset", err)
	}
}

// TestClientObserveReregistersWithOurServer lets Max-Age run out so the
// client re-registers with the same token (RFC 7641 §3.3.1): the server
// replaces the registration and notifications keep arriving.
func TestClientObserveReregistersWithOurServer(t *testing.T) {
	h := HandlerFunc(func(w ResponseWriter, _ *Request) {
		*w.Options() = w.Options().SetUint(message.MaxAge, 0)
		_, _ = w.Write([]byte("a"))
	})
	replaced := make(chan struct{}, 16)
	obs, addr := startObserveServer(t, ObserveOptions{OnDeregister: func(_ observe.Observer, r error) {
		if errors.Is(r, observe.ErrReplaced) {
			select {
			case replaced <- struct{}{}:
			default:
			}
		}
	}}, h)
	c := newBlockClient(t, ClientBlockwiseOptions{})
	fn, ch := collect(16)
	req, _ := NewRequest(message.GET, fmt.Sprintf("coap://%s/obs", addr), nil)
	o, err := c.ObserveRequest(testCtx(t), req, fn, ObservationOptions{ReregisterMargin: 80 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Wait()
	defer o.Cancel(testCtx(t))
	nextNote(t, ch)
	for range 2 {
		select {
		case <-replaced:
		case <-time.After(2 * time.Second):
			t.Fatal("no re-registration reached the server")
		}
	}
	if n := obs.Observers("/obs"); n != 1 {
		t.Fatalf("observers %d", n)
	}
	// The handler keeps answering "a"; "b" can only come as a notification.
	obs.NotifyState("/obs", observe.State{Payload: []byte("b")})
	for deadline := time.Now().Add(2 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("notification after re-registration never arrived")
		}
		if n := nextNote(t, ch); string(n.Payload) == "b" {
			break
		}
	}
}

// TestClientObserveServerSequenceRestarts: a device that rebooted has
// forgotten its observers, and its counter starts low again. The answer to
// the client's re-registration carries such a low Observe value; it answers
// a request just sent, so it is delivered and later notifications are
// judged against it instead of being dropped as stale until the numbers
// pass the old ones or 128 s go by (RFC 7641 §3.3.1, §3.4). It works for a
// piggybacked answer and for a separate one after an empty ACK.
func TestClientObserveServerSequenceRestarts(t *testing.T) {
	for _, separate := range []bool{false, true} {
		t.Run(fmt.Sprintf("separate=%v", separate), func(t *testing.T) {
			type event struct {
				kind       string
				seq, other uint32
			}
			events := make(chan event, 16)
			nextEvent := func() event {
				t.Helper()
				select {
				case e := <-events:
					return e
				case <-time.After(2 * time.Second):
					t.Fatal("no stale or restart event")
					return event{}
				}
			}
			oo := ObservationOptions{
				ReregisterMargin: 80 * time.Millisecond,
				OnStale:          func(seq, latest uint32) { events <- event{"stale", seq, latest} },
				OnRestart:        func(seq, prev uint32) { events <- event{"restart", seq, prev} },
			}
			// Max-Age 0: the client re-registers 80 ms after the first
			// response, as it would after a silent device's Max-Age.
			f, o, ch := startFakeObservation(t, 100, 0, oo)
			defer func() {
				o.end(ErrCanceled)
				o.Wait()
			}()
			rereg := f.mustRecv(2 * time.Second)
			if v, ok := rereg.Options.Observe(); rereg.Code != message.GET || !ok || v != observe.Register {
				t.Fatalf("re-registration %v", rereg)
			}
			answer := &message.Message{Type: message.Acknowledgement, Code: message.Content, MessageID: rereg.MessageID, Token: rereg.Token}
			if separate {
				f.sendMsg(&message.Message{Type: message.Acknowledgement, MessageID: rereg.MessageID})
				answer.Type, answer.MessageID = message.Confirmable, 300
			}
			answer.Options = answer.Options.SetUint(message.Observe, 2).SetUint(message.MaxAge, 60)
			answer.Payload = []byte("rebooted")
			f.sendMsg(answer)
			if n := nextNote(t, ch); string(n.Payload) != "rebooted" || n.Seq != 2 {
				t.Fatalf("answer to the re-registration: %q seq %d", n.Payload, n.Seq)
			}
			if e := nextEvent(); e != (event{"restart", 2, 100}) {
				t.Fatalf("event %+v, want the restart from 100 to 2", e)
			}
			// The new sequence goes on from 2; an older number is stale.
			f.notify(301, message.NonConfirmable, 3, "3")
			if n := nextNote(t, ch); string(n.Payload) != "3" {
				t.Fatalf("notification after the restart: %q", n.Payload)
			}
			f.notify(302, message.NonConfirmable, 1, "1")
			noNote(t, ch, 50*time.Millisecond)
			if e := nextEvent(); e != (event{"stale", 1, 3}) {
				t.Fatalf("event %+v, want seq 1 dropped as stale after 3", e)
			}
			if r, s := o.Stats().Restarts.Load(), o.Stats().Stale.Load(); r != 1 || s != 1 {
				t.Errorf("Restarts %d, Stale %d; want 1, 1", r, s)
			}
		})
	}
}

// TestClientObserveCancelContextBoundsDeregistration: when the observation's
// context ends, the deregistration is sent, and a CancelContext that has
// ended (a shutdown deadline) ends the observation without waiting
// CancelTimeout for a server that does not answer.
func TestClientObserveCancelContextBoundsDeregistration(t *testing.T) {
	shutdown, deadline := context.WithCancel(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// RFC 7252 default transmission parameters: an unanswered CON is
	// retransmitted for 45 s.
	c, err := NewClient(ClientOptions{LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, o, _ := startFakeObservationCtx(t, ctx, c, 10, 60, ObservationOptions{CancelTimeout: time.Minute, CancelContext: shutdown})
	deadline()
	cancel()
	select {
	case <-o.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("observation still waiting for the deregistration after CancelContext ended")
	}
	o.Wait()
	if !errors.Is(o.Err(), ErrCanceled) {
		t.Errorf("Err %v, want ErrCanceled", o.Err())
	}
	dereg := f.mustRecv(2 * time.Second)
	if v, ok := dereg.Options.Observe(); dereg.Code != message.GET || !ok || v != observe.Deregister {
		t.Fatalf("deregistration %v", dereg)
	}
}

func TestReregisterMarginScalesWithMaxAge(t *testing.T) {
	for _, c := range []struct {
		configured time.Duration
		maxAge     uint32
		want       time.Duration
	}{
		{0, 1, time.Second},              // floor
		{0, 6, 3 * time.Second},          // half of Max-Age
		{0, 60, DefaultReregisterMargin}, // cap
		{0, 0, time.Second},
		{250 * time.Millisecond, 60, 250 * time.Millisecond}, // configured wins
	} {
		if got := reregisterMargin(c.configured, c.maxAge); got != c.want {
			t.Errorf("reregisterMargin(%v, %d) = %v, want %v", c.configured, c.maxAge, got, c.want)
		}
	}
}

// TestClientObserveAfterDone: a function given to AfterDone runs once the
// observation ends, and at once when given after it ended.
func TestClientObserveAfterDone(t *testing.T) {
	_, o, _ := startFakeObservation(t, 10, 60, ObservationOptions{})
	before := make(chan struct{})
	o.AfterDone(func() { close(before) })
	select {
	case <-before:
		t.Fatal("ran before the observation ended")
	case <-time.After(50 * time.Millisecond):
	}
	o.end(ErrCanceled)
	o.Wait()
	for _, ch := range []chan struct{}{before, make(chan struct{})} {
		if ch != before {
			o.AfterDone(func() { close(ch) })
		}
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("did not run after the observation ended")
		}
		select {
		case <-o.Done():
		default:
			t.Fatal("ran before Done was closed")
		}
	}
}
