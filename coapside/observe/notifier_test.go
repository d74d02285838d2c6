package observe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSender records notifications on a channel; react, if set, decides
// each Send's result and may block.
type fakeSender struct {
	ch    chan Notification
	react func(ctx context.Context, n Notification) error
}

func newFakeSender(react func(ctx context.Context, n Notification) error) *fakeSender {
	return &fakeSender{ch: make(chan Notification, 10000), react: react}
}

func (f *fakeSender) Send(ctx context.Context, n Notification) error {
	f.ch <- n
	if f.react != nil {
		return f.react(ctx, n)
	}
	return nil
}

// next waits for the next notification.
func (f *fakeSender) next(t *testing.T) Notification {
	t.Helper()
	select {
	case n := <-f.ch:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no notification sent")
		return Notification{}
	}
}

// none checks that nothing more is sent for a short while.
func (f *fakeSender) none(t *testing.T) {
	t.Helper()
	select {
	case n := <-f.ch:
		t.Fatalf("unexpected notification %+v", n)
	case <-time.After(50 * time.Millisecond):
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// start runs n until the test ends.
func start(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

type deregLog struct {
	mu  sync.Mutex
	evs []string
}

func (d *deregLog) record(o Observer, reason error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.evs = append(d.evs, fmt.Sprintf("%s %s %s: %v", o.Path, o.Endpoint, o.Token, reason))
}

func (d *deregLog) get() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.evs...)
}

func TestNotifyFanOut(t *testing.T) {
	fs := newFakeSender(nil)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	n := New(fs, Options{Now: clk.Now})
	regs := map[string]Registration{}
	for _, ep := range []string{"10.0.0.1:5683", "10.0.0.2:5683", "[::1]:6000"} {
		r, err := n.Register("/temp", ep, []byte("tk-"+ep[:4]))
		if err != nil {
			t.Fatal(err)
		}
		if r.Replaced || r.Seq != uint32(clk.Now().Unix())&SeqMask {
			t.Fatalf("registration %+v", r)
		}
		regs[ep] = r
	}
	if _, err := n.Register("/other", "10.0.0.1:5683", []byte("x")); err != nil {
		t.Fatal(err)
	}
	start(t, n)

	st := State{Payload: []byte("21.5"), ContentFormat: 0, MaxAge: 30}
	if got := n.Notify("/temp", st); got != 3 {
		t.Fatalf("Notify reached %d observers", got)
	}
	seen := map[string]bool{}
	for range 3 {
		m := fs.next(t)
		if m.Path != "/temp" || string(m.Payload) != "21.5" || m.MaxAge != 30 || m.Confirmable {
			t.Fatalf("notification %+v", m)
		}
		if m.Token != "tk-"+m.Endpoint[:4] || m.Seq != NextSeq(regs[m.Endpoint].Seq) {
			t.Fatalf("token/seq %+v", m)
		}
		seen[m.Endpoint] = true
	}
	fs.none(t)
	if len(seen) != 3 {
		t.Fatalf("endpoints reached: %v", seen)
	}
	if n.Notify("/nobody", st) != 0 {
		t.Fatal("Notify of unobserved path reached observers")
	}
}

func TestConfirmablePolicy(t *testing.T) {
	fs := newFakeSender(nil)
	clk := &clock{t: time.Unix(1_000_000, 0)}
	n := New(fs, Options{Now: clk.Now, ConEvery: 3})
	if _, err := n.Register("/r", "ep", []byte{1}); err != nil {
		t.Fatal(err)
	}
	start(t, n)
	var got []bool
	for i := range 7 {
		if i == 6 {
			// Long quiet period: the next one is CON by the 24 h rule,
			// although only one NON was sent since the last CON. The time
			// of that CON is taken when its send completes, so wait for it
			// before moving the clock.
			deadline := time.Now().Add(5 * time.Second)
			for n.Stats().Confirmable < 2 {
				if time.Now().After(deadline) {
					t.Fatal("second CON never completed")
				}
				time.Sleep(time.Millisecond)
			}
			clk.Advance(24 * time.Hour)
		}
		n.Notify("/r", State{Payload: []byte{byte(i)}})
		m := fs.next(t)
		if m.Payload[0] != byte(i) {
			t.Fatalf("notification %d carries %d", i, m.Payload[0])
		}
		got = append(got, m.Confirmable)
	}
	want := []bool{false, false, true, false, false, true, true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("confirmable pattern %v, want %v", got, want)
	}
	// The last send is counted once the sender returns.
	testkit.Eventually(t, 5*time.Second, "every notification counted sent", func() bool { return n.Stats().Sent == 7 })
	if st := n.Stats(); st.Sent != 7 || st.Confirmable != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSlowObserverLatestValueWins(t *testing.T) {
	release := make(chan struct{})
	slowStarted := make(chan struct{}, 10)
	fs := newFakeSender(func(ctx context.Context, m Notification) error {
		if m.Endpoint != "slow" {
			return nil
		}
		slowStarted <- struct{}{}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	n := New(fs, Options{Workers: 2})
	for _, ep := range []string{"slow", "fast1", "fast2"} {
		if _, err := n.Register("/r", ep, []byte("t")); err != nil {
			t.Fatal(err)
		}
	}
	start(t, n)

	n.Notify("/r", State{Payload: []byte{1}})
	<-slowStarted
	fast := map[string][]byte{}
	for range 3 {
		m := fs.next(t)
		fast[m.Endpoint] = append(fast[m.Endpoint], m.Payload[0])
	}
	// The slow observer blocks a worker; the others keep getting every
	// state, in order, one at a time.
	for v := byte(2); v <= 5; v++ {
		n.Notify("/r", State{Payload: []byte{v}})
		for range 2 {
			m := fs.next(t)
			if m.Endpoint == "slow" {
				t.Fatalf("second notification to slow observer while one is in flight: %+v", m)
			}
			fast[m.Endpoint] = append(fast[m.Endpoint], m.Payload[0])
		}
	}
	for _, ep := range []string{"fast1", "fast2"} {
		if fmt.Sprint(fast[ep]) != "[1 2 3 4 5]" {
			t.Fatalf("%s got %v", ep, fast[ep])
		}
	}
	close(release)
	m := fs.next(t)
	if m.Endpoint != "slow" || m.Payload[0] != 5 {
		t.Fatalf("slow observer's next notification %+v, want the latest state 5", m)
	}
	fs.none(t)
	if st := n.Stats(); st.Superseded != 3 {
		t.Fatalf("superseded %d, want 3 (states 2, 3, 4)", st.Superseded)
	}
}

func TestSendOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		con      bool
		reason   error
		kept     bool
		stat     func(Stats) uint64
		statWant uint64
	}{
		{"RST removes", fmt.Errorf("coap: %w", ErrReset), false, ErrReset, false, func(s Stats) uint64 { return s.Resets }, 1},
		{"CON timeout removes", fmt.Errorf("coap: %w", ErrTimeout), true, ErrTimeout, false, func(s Stats) uint64 { return s.Timeouts }, 1},
		{"port unreachable removes", fmt.Errorf("coap: %w", ErrUnreachable), true, ErrUnreachable, false, func(s Stats) uint64 { return s.Unreachable }, 1},
		{"other error keeps", errors.New("write: network unreachable"), false, nil, true, func(s Stats) uint64 { return s.SendErrors }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeSender(func(_ context.Context, m Notification) error {
				if m.Endpoint == "bad" {
					return tt.err
				}
				return nil
			})
			var dl deregLog
			opts := Options{OnDeregister: dl.record}
			if tt.con {
				opts.ConEvery = 1
			}
			n := New(fs, opts)
			n.Register("/r", "bad", []byte("b"))
			n.Register("/r", "good", []byte("g"))
			start(t, n)
			n.Notify("/r", State{Payload: []byte("x")})
			for range 2 {
				m := fs.next(t)
				if m.Confirmable != tt.con {
					t.Fatalf("confirmable %v", m.Confirmable)
				}
			}
			// Wait until the outcome is recorded, then check.
			deadline := time.Now().Add(5 * time.Second)
			for tt.stat(n.Stats()) != tt.statWant && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := tt.stat(n.Stats()); got != tt.statWant {
				t.Fatalf("counter %d, want %d", got, tt.statWant)
			}
			wantObs := 1
			if tt.kept {
				wantObs = 2
			}
			if got := n.Observers("/r"); got != wantObs {
				t.Fatalf("%d observers left, want %d", got, wantObs)
			}
			evs := dl.get()
			if tt.reason == nil && len(evs) != 0 || tt.reason != nil && (len(evs) != 1 || evs[0] != "/r bad b: "+tt.reason.Error()) {
				t.Fatalf("deregistrations %q", evs)
			}
			n.Notify("/r", State{Payload: []byte("y")})
			for range wantObs {
				fs.next(t)
			}
			fs.none(t)
		})
	}
}

func TestErrorNotificationEndsObservation(t *testing.T) {
	fs := newFakeSender(nil)
	var dl deregLog
	n := New(fs, Options{OnDeregister: dl.record})
	n.Register("/gone", "a", []byte("1"))
	start(t, n)
	n.Notify("/gone", State{Code: message.NotFound})
	if m := fs.next(t); m.Code != message.NotFound {
		t.Fatalf("notification %+v", m)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.Observers("/gone") != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n.Observers("/gone") != 0 {
		t.Fatal("observer kept after 4.04 notification")
	}
	if evs := dl.get(); len(evs) != 1 || evs[0] != "/gone a 1: "+ErrFinal.Error() {
		t.Fatalf("deregistrations %q", evs)
	}
}

func TestRegistry(t *testing.T) {
	var dl deregLog
	n := New(newFakeSender(nil), Options{MaxObservers: 3, OnDeregister: dl.record})
	mustReg := func(path, ep, tok string, replaced bool) {
		t.Helper()
		r, err := n.Register(path, ep, []byte(tok))
		if err != nil || r.Replaced != replaced {
			t.Fatalf("Register(%s,%s,%s) = %+v, %v", path, ep, tok, r, err)
		}
	}
	mustReg("/a", "e1", "t1", false)
	mustReg("/a", "e1", "t2", false)
	mustReg("/a", "e1", "t1", true) // same endpoint and token: replaced
	mustReg("/b", "e1", "t2", true) // moves to another resource
	mustReg("/b", "e2", "t1", false)
	if n.Observers("/a") != 1 || n.Observers("/b") != 2 {
		t.Fatalf("observers a=%d b=%d", n.Observers("/a"), n.Observers("/b"))
	}
	if _, err := n.Register("/c", "e3", []byte("t")); !errors.Is(err, ErrTooManyObservers) {
		t.Fatalf("over limit: %v", err)
	}
	if !n.Deregister("e1", []byte("t1")) || n.Deregister("e1", []byte("t1")) {
		t.Fatal("Deregister result wrong")
	}
	if n.Observers("/a") != 0 {
		t.Fatal("observer left on /a")
	}
	if got := n.DeregisterEndpoint("e1"); got != 1 {
		t.Fatalf("DeregisterEndpoint removed %d", got)
	}
	if !n.Reset("e2", []byte("t1")) {
		t.Fatal("Reset found nothing")
	}
	st := n.Stats()
	if st.Observers != 0 || st.Deregistered != 5 || st.Resets != 1 {
		t.Fatalf("stats %+v", st)
	}
	want := []string{
		"/a e1 t1: " + ErrReplaced.Error(),
		"/a e1 t2: " + ErrReplaced.Error(),
		"/a e1 t1: " + ErrDeregistered.Error(),
		"/b e1 t2: " + ErrDeregistered.Error(),
		"/b e2 t1: " + ErrReset.Error(),
	}
	if fmt.Sprint(dl.get()) != fmt.Sprint(want) {
		t.Fatalf("deregistrations\n got %q\nwant %q", dl.get(), want)
	}
}

func TestSequenceWraps(t *testing.T) {
	fs := newFakeSender(nil)
	clk := &clock{t: time.Unix(SeqMask-1, 0)}
	n := New(fs, Options{Now: clk.Now})
	r, _ := n.Register("/r", "e", []byte("t"))
	if r.Seq != SeqMask-1 {
		t.Fatalf("initial seq %d", r.Seq)
	}
	start(t, n)
	var tr Tracker
	tr.Check(r.Seq, clk.Now())
	for _, want := range []uint32{SeqMask, 0, 1} {
		n.Notify("/r", State{})
		m := fs.next(t)
		if m.Seq != want {
			t.Fatalf("seq %d, want %d", m.Seq, want)
		}
		if v := tr.Check(m.Seq, clk.Now()); v != Accept {
			t.Fatalf("client judged seq %d %v", m.Seq, v)
		}
	}
}

// TestFirstSeqOverridesClock: a server that counts from a low number (as a
// device does after a boot) gives that number to a new registration, and a
// re-registration with the same token still continues its sequence.
func TestFirstSeqOverridesClock(t *testing.T) {
	fs := newFakeSender(nil)
	next := uint32(1)
	n := New(fs, Options{FirstSeq: func() uint32 { next++; return next }})
	for i, want := range []uint32{2, 3} {
		r, err := n.Register("/r", fmt.Sprintf("e%d", i), []byte("t"))
		if err != nil || r.Seq != want {
			t.Fatalf("registration %d: %+v %v, want seq %d", i, r, err, want)
		}
	}
	if r, _ := n.Register("/r", "e0", []byte("t")); !r.Replaced || r.Seq != 3 {
		t.Fatalf("re-registration %+v, want the sequence continued at 3", r)
	}
}

// asyncSender completes CON notifications only when released, from its own
// goroutine, and NON ones at once.
type asyncSender struct {
	ch      chan Notification
	mu      sync.Mutex
	waiting []func(error)
	wg      sync.WaitGroup
}

func (a *asyncSender) Send(context.Context, Notification) error { panic("Send called on AsyncSender") }

func (a *asyncSender) SendAsync(_ context.Context, m Notification, done func(error)) {
	a.ch <- m
	if !m.Confirmable {
		done(nil)
		return
	}
	a.mu.Lock()
	a.waiting = append(a.waiting, done)
	a.mu.Unlock()
}

func (a *asyncSender) releaseAll(err error) {
	a.mu.Lock()
	w := a.waiting
	a.waiting = nil
	a.mu.Unlock()
	for _, done := range w {
		a.wg.Go(func() { done(err) })
	}
	a.wg.Wait()
}

func TestAsyncSenderDoesNotBlockWorkers(t *testing.T) {
	as := &asyncSender{ch: make(chan Notification, 1000)}
	var dl deregLog
	n := New(as, Options{Workers: 1, ConEvery: 1, OnDeregister: dl.record})
	for i := range 50 {
		n.Register("/r", fmt.Sprint("ep", i), []byte("t"))
	}
	start(t, n)
	n.Notify("/r", State{Payload: []byte{1}})
	// One worker starts all 50 CON notifications without waiting for ACKs.
	for range 50 {
		select {
		case <-as.ch:
		case <-time.After(5 * time.Second):
			t.Fatal("worker blocked on an unacknowledged CON")
		}
	}
	n.Notify("/r", State{Payload: []byte{2}})
	select {
	case m := <-as.ch:
		t.Fatalf("second notification %+v while the first is in flight", m)
	case <-time.After(50 * time.Millisecond):
	}
	as.releaseAll(ErrTimeout)
	if n.Stats().Observers != 0 || len(dl.get()) != 50 {
		t.Fatalf("after timeouts: %+v, %d deregistrations", n.Stats(), len(dl.get()))
	}
}

func TestLifecycle(t *testing.T) {
	block := make(chan struct{})
	fs := newFakeSender(func(ctx context.Context, _ Notification) error {
		select {
		case <-block:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	n := New(fs, Options{})
	n.Register("/r", "e", []byte("t"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	n.Notify("/r", State{})
	fs.next(t) // a Send is in progress and blocked
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := n.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Run: %v", err)
	}
	if _, err := n.Register("/r", "e2", []byte("t")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register after close: %v", err)
	}
	if n.Notify("/r", State{}) != 0 {
		t.Fatal("Notify after close reached observers")
	}
	if st := n.Stats(); st.SendErrors != 0 || st.Observers != 1 {
		t.Fatalf("shutdown counted as failure: %+v", st)
	}
}

func TestReregistrationContinuesSequence(t *testing.T) {
	fs := newFakeSender(nil)
	clk := &clock{t: time.Unix(1000, 0)}
	n := New(fs, Options{Now: clk.Now})
	first, _ := n.Register("/r", "e", []byte("t"))
	start(t, n)
	var tr Tracker
	tr.Check(first.Seq, clk.Now())
	for range 3 {
		n.Notify("/r", State{})
		tr.Check(fs.next(t).Seq, clk.Now())
	}
	// Same token again: the response must still look newer to the client.
	again, err := n.Register("/r", "e", []byte("t"))
	if err != nil || !again.Replaced || again.Seq != first.Seq+4 {
		t.Fatalf("re-registration %+v, %v; want seq %d", again, err, first.Seq+4)
	}
	if v := tr.Check(again.Seq, clk.Now()); v != Accept {
		t.Fatalf("client judged the re-registration response %v", v)
	}
	n.Notify("/r", State{})
	if m := fs.next(t); m.Seq != again.Seq+1 {
		t.Fatalf("next notification seq %d, want %d", m.Seq, again.Seq+1)
	}
}

// TestUnreachableRemovesTheEndpoint: Unreachable removes every observer
// of one endpoint, whatever their paths, counts them and reports the
// reason; other endpoints keep theirs.
func TestUnreachableRemovesTheEndpoint(t *testing.T) {
	var dl deregLog
	n := New(newFakeSender(func(context.Context, Notification) error { return nil }), Options{OnDeregister: dl.record})
	for _, r := range []struct{ path, ep, tok string }{{"/a", "gone", "1"}, {"/b", "gone", "2"}, {"/a", "stays", "3"}} {
		if _, err := n.Register(r.path, r.ep, []byte(r.tok)); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.Unreachable("gone"); got != 2 {
		t.Fatalf("removed %d, want 2", got)
	}
	if n.Observers("/a") != 1 || n.Observers("/b") != 0 {
		t.Errorf("observers /a %d, /b %d; want 1, 0", n.Observers("/a"), n.Observers("/b"))
	}
	if s := n.Stats(); s.Unreachable != 2 || s.Observers != 1 {
		t.Errorf("unreachable %d, observers %d", s.Unreachable, s.Observers)
	}
	evs := dl.get()
	if len(evs) != 2 {
		t.Errorf("deregistrations %q, want 2", evs)
	}
	for _, ev := range evs {
		if !strings.HasSuffix(ev, ": "+ErrUnreachable.Error()) {
			t.Errorf("deregistration %q, want reason %v", ev, ErrUnreachable)
		}
	}
	if got := n.Unreachable("gone"); got != 0 {
		t.Errorf("a second report removed %d", got)
	}
	// A new registration of the same endpoint is indexed again.
	if _, err := n.Register("/b", "gone", []byte("4")); err != nil {
		t.Fatal(err)
	}
	if got := n.Unreachable("gone"); got != 1 {
		t.Errorf("removed %d after re-registering, want 1", got)
	}
}
