package observe

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// TestTimeoutRemovesEndpoint: a confirmable notification that times out
// removes every observer of that client endpoint at once (it is
// unreachable), not one per timed-out notification; other endpoints stay.
func TestTimeoutRemovesEndpoint(t *testing.T) {
	fs := newFakeSender(func(_ context.Context, m Notification) error {
		if m.Endpoint == "dead" && m.Confirmable {
			return ErrTimeout
		}
		return nil
	})
	var dl deregLog
	n := New(fs, Options{Workers: 1, ConEvery: 1, OnDeregister: dl.record})
	for _, tok := range []string{"1", "2", "3"} {
		n.Register("/r", "dead", []byte(tok))
	}
	n.Register("/other", "dead", []byte("4"))
	n.Register("/r", "alive", []byte("5"))
	start(t, n)
	n.Notify("/r", State{Payload: []byte("x")})
	testkit.Eventually(t, 5*time.Second, "dead endpoint's observers removed", func() bool {
		return n.Stats().Observers == 1
	})
	if n.Observers("/r") != 1 || n.Observers("/other") != 0 {
		t.Errorf("observers left: /r %d, /other %d", n.Observers("/r"), n.Observers("/other"))
	}
	if evs := dl.get(); len(evs) != 4 {
		t.Errorf("deregistrations %q, want the dead endpoint's 4", evs)
	}
}

// TestCheckIntervalSendsCON: with CheckInterval, an observer of a resource
// that does not change gets its latest state (from Current before any
// Notify) as a confirmable notification once its last confirmed contact
// is that old, and is removed when that one times out.
func TestCheckIntervalSendsCON(t *testing.T) {
	var acked atomic.Bool
	acked.Store(true)
	fs := newFakeSender(func(_ context.Context, m Notification) error {
		if m.Confirmable && !acked.Load() {
			return ErrTimeout
		}
		return nil
	})
	var currents atomic.Int32
	n := New(fs, Options{CheckInterval: 100 * time.Millisecond, Current: func(path string) (State, bool) {
		currents.Add(1)
		return State{Payload: []byte("now:" + path)}, true
	}})
	n.Register("/quiet", "c", []byte("1"))
	start(t, n)
	m := fs.next(t)
	if !m.Confirmable || string(m.Payload) != "now:/quiet" {
		t.Fatalf("check notification %+v", m)
	}
	if currents.Load() != 1 {
		t.Errorf("Current called %d times", currents.Load())
	}
	// Acknowledged: the observer stays and is checked again later, with
	// the state kept from the first check.
	m = fs.next(t)
	if !m.Confirmable || string(m.Payload) != "now:/quiet" || currents.Load() != 1 {
		t.Fatalf("second check %+v (Current called %d times)", m, currents.Load())
	}
	acked.Store(false)
	testkit.Eventually(t, 5*time.Second, "unacknowledged observer removed", func() bool { return n.Observers("/quiet") == 0 })
	if s := n.Stats(); s.Checks < 2 || s.Timeouts != 1 {
		t.Errorf("checks %d, timeouts %d", s.Checks, s.Timeouts)
	}
}

// TestDeferredNotificationWaitsForTheRetryTick: a notification the sender
// defers (no room in the transport) is not tried again at every change of
// the resource but once per retry tick, with the latest state, and is
// neither a send error nor a reason to remove the observer.
func TestDeferredNotificationWaitsForTheRetryTick(t *testing.T) {
	var room atomic.Bool
	fs := newFakeSender(func(_ context.Context, m Notification) error {
		if !room.Load() {
			return ErrDeferred
		}
		return nil
	})
	n := New(fs, Options{Workers: 2})
	n.Register("/r", "c", []byte("1"))
	start(t, n)
	n.Notify("/r", State{Payload: []byte("0")})
	fs.next(t) // deferred
	for i := 1; i <= 100; i++ {
		n.Notify("/r", State{Payload: []byte(strconv.Itoa(i))})
	}
	fs.none(t) // no attempt before the tick
	room.Store(true)
	if m := fs.next(t); string(m.Payload) != "100" { // at the tick, within DefaultRetryInterval
		t.Fatalf("retried with %q, want the latest state", m.Payload)
	}
	// The send is counted once the sender returns, after it saw the message.
	testkit.Eventually(t, 5*time.Second, "the retried notification counted sent", func() bool { return n.Stats().Sent == 1 })
	s := n.Stats()
	if s.Deferred != 1 || s.SendErrors != 0 || s.Sent != 1 || s.Observers != 1 {
		t.Fatalf("stats %+v: want 1 deferred, 1 sent, no send error, the observer kept", s)
	}
}
