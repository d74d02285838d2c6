package mqttside

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func TestRemoteCloseSettlesBufferedMessages(t *testing.T) {
	checkLeaks(t)
	var logs testkit.SyncBuffer
	r := newTestRemote(t, RemoteOptions{Broker: fmt.Sprintf("tcp://127.0.0.1:%d", peer.FreeTCPPort(t)), Logger: testLogger(&logs)})
	if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := r.Publish(short, Message{Topic: "c/a", QoS: 1}); !errors.Is(err, ErrPending) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish while offline with short ctx = %v, want ErrPending", err)
	}
	waiting := make(chan error, 1)
	go func() { waiting <- r.Publish(context.Background(), Message{Topic: "c/b", QoS: 1}) }()
	testkit.Eventually(t, time.Second, "second message buffered", func() bool { return r.Stats().BufferDepth == 2 })

	start := time.Now()
	if err := r.Close(ctxT(t, 200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with a 200ms context", d)
	}
	select {
	case err := <-waiting:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("waiting publisher got %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("waiting publisher not released by Close")
	}
	st := r.Stats()
	if st.Failed != 2 || st.BufferDepth != 0 || st.Connected {
		t.Errorf("stats after Close %+v, want 2 failed", st)
	}
	if !strings.Contains(logs.String(), "undelivered") {
		t.Error("undelivered messages at Close not logged")
	}
	if r.State() != StateClosed {
		t.Errorf("state %v", r.State())
	}
	if err := r.Close(context.Background()); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := r.Publish(context.Background(), Message{Topic: "c/a"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %v", err)
	}
	if err := r.Subscribe(context.Background(), "c/#", 0, newCollector()); !errors.Is(err, ErrClosed) {
		t.Errorf("Subscribe after Close = %v", err)
	}
	if err := r.Start(context.Background()); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestRemoteUnsubscribeAndRefusedSubscription(t *testing.T) {
	checkLeaks(t)
	// The embedded broker answers a subscription outside its ACL with
	// the failure return code 0x80.
	auth := filepath.Join(t.TempDir(), "auth.toml")
	if err := os.WriteFile(auth, []byte("[anonymous]\npublish=[\"open/#\"]\nsubscribe=[\"open/#\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newTestEmbedded(t, EmbeddedOptions{AuthFile: auth})
	r := newTestRemote(t, RemoteOptions{Broker: "tcp://" + e.Addr(), StatusTopic: "-"})
	ctx := ctxT(t, 10*time.Second)
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Subscribe(ctx, "closed/#", 1, newCollector()); !errors.Is(err, ErrSubscribeRefused) {
		t.Fatalf("subscription outside the broker ACL = %v, want ErrSubscribeRefused", err)
	}
	col, marker := newCollector(), newCollector()
	if err := r.Subscribe(ctx, "open/a/#", 1, col); err != nil {
		t.Fatal(err)
	}
	if err := r.Subscribe(ctx, "open/marker", 1, marker); err != nil {
		t.Fatal(err)
	}
	if err := r.Publish(ctx, Message{Topic: "open/a/1", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "first delivery", func() bool { return col.count() == 1 })
	if err := r.Unsubscribe(ctx, "open/a/#"); err != nil {
		t.Fatal(err)
	}
	if err := r.Publish(ctx, Message{Topic: "open/a/2", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := r.Publish(ctx, Message{Topic: "open/marker", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "marker", func() bool { return marker.count() == 1 })
	if col.count() != 1 {
		t.Fatalf("delivery after Unsubscribe: %v", col.payloads())
	}
}

func TestNewSelectsBackend(t *testing.T) {
	checkLeaks(t)
	c, err := New(Options{Broker: "embedded", MaxPayload: 10, AllowEmptyLevels: true, Embedded: EmbeddedOptions{Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := c.(*Embedded)
	if !ok {
		t.Fatalf("embedded broker gave %T", c)
	}
	if e.opts.MaxPayload != 10 || !e.opts.AllowEmptyLevels {
		t.Errorf("options not passed on: max payload %d, empty levels %v", e.opts.MaxPayload, e.opts.AllowEmptyLevels)
	}
	c, err = New(Options{Broker: "tcp://127.0.0.1:1883", ClientID: "x", Password: "pw", AllowEmptyLevels: true})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := c.(*Remote)
	if !ok {
		t.Fatalf("tcp broker gave %T", c)
	}
	if !r.opts.AllowEmptyLevels {
		t.Error("empty levels not passed on to the remote client")
	}
	_ = c.Close(context.Background())
	if _, err := New(Options{Broker: "carrier-pigeon://coop"}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("bad broker URL: %v", err)
	}
}

func TestDeliveryAckOnce(t *testing.T) {
	n := 0
	d := &Delivery{ack: func() { n++ }}
	d.Ack()
	d.Ack()
	if n != 1 {
		t.Fatalf("ack sent %d times", n)
	}
	(&Delivery{}).Ack() // no ack function: no panic
}

// TestRemoteStartContextEndsFirst uses a listener that accepts TCP but
// never answers CONNECT: Start returns when its context ends, and the
// client keeps connecting in the background.
func TestRemoteStartContextEndsFirst(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-acceptDone
		for _, c := range held {
			c.Close()
		}
	})
	var logs testkit.SyncBuffer
	r := newTestRemote(t, RemoteOptions{Broker: "tcp://" + ln.Addr().String(), Logger: testLogger(&logs)})
	start := time.Now()
	if err := r.Start(ctxT(t, 100*time.Millisecond)); err != nil {
		t.Fatalf("Start = %v, want nil (still connecting)", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Start took %v with a 100ms context", d)
	}
	if r.State() != StateConnecting {
		t.Errorf("state %v, want connecting", r.State())
	}
	if !strings.Contains(logs.String(), "still connecting") {
		t.Errorf("logs do not say the client is still connecting: %s", logs.String())
	}
	if err := r.Close(ctxT(t, time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestRemoteRefusedSubscriptionMadeOffline registers a subscription
// before Start that the broker refuses: it is logged and dropped, and the
// allowed one works.
func TestRemoteRefusedSubscriptionMadeOffline(t *testing.T) {
	checkLeaks(t)
	auth := filepath.Join(t.TempDir(), "auth.toml")
	if err := os.WriteFile(auth, []byte("[anonymous]\npublish=[\"open/#\"]\nsubscribe=[\"open/#\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newTestEmbedded(t, EmbeddedOptions{AuthFile: auth})
	var logs testkit.SyncBuffer
	r := newTestRemote(t, RemoteOptions{Broker: "tcp://" + e.Addr(), StatusTopic: "-", Logger: testLogger(&logs)})
	ctx := ctxT(t, 10*time.Second)
	open, closed := newCollector(), newCollector()
	if err := r.Subscribe(ctx, "closed/#", 1, closed); err != nil {
		t.Fatal(err)
	}
	if err := r.Subscribe(ctx, "open/#", 1, open); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "refused by broker") {
		if time.Now().After(deadline) {
			t.Fatalf("refusal not logged: %s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.mu.Lock()
	_, kept := r.subs["closed/#"]
	r.mu.Unlock()
	if kept {
		t.Error("refused subscription kept")
	}
	// The SUBSCRIBE for open/# may still be on its way: publish until it lands.
	testkit.Eventually(t, 5*time.Second, "allowed subscription works", func() bool {
		if err := e.Publish(ctx, Message{Topic: "open/x", QoS: 1}); err != nil {
			t.Fatal(err)
		}
		return open.count() > 0
	})
}

// TestRemoteCloseWithinDeadlineBrokerDead closes a client holding
// undelivered QoS 1 messages after its broker died (SIGKILL: the
// connection is gone) or hung (SIGSTOP: the connection stays open, nothing
// answers): Close must return by its context's deadline and settle every
// message.
func TestRemoteCloseWithinDeadlineBrokerDead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(*peer.Mosquitto)
	}{
		{"killed", (*peer.Mosquitto).Kill},
		{"hung", (*peer.Mosquitto).Pause},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			m := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
			var logs testkit.SyncBuffer
			r := newTestRemote(t, RemoteOptions{Broker: m.URL(), Logger: testLogger(&logs)})
			if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			tc.fault(m)
			const n = 5
			results := make(chan error, n)
			for i := range n {
				go func() {
					results <- r.Publish(context.Background(), Message{Topic: "dead/t", Payload: []byte{byte(i)}, QoS: 1})
				}()
			}
			testkit.Eventually(t, 5*time.Second, "publishes accepted", func() bool {
				r.mu.Lock()
				defer r.mu.Unlock()
				return r.outstanding == n
			})

			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			deadline, _ := ctx.Deadline()
			if err := r.Close(ctx); err != nil {
				t.Fatal(err)
			}
			// Close stops waiting at its deadline; what follows it (the
			// goroutines it no longer waits for) takes no time, but a loaded
			// machine may run Close's goroutine a little late.
			if late := time.Since(deadline); late > 200*time.Millisecond {
				t.Errorf("Close returned %v after its deadline", late.Round(time.Millisecond))
			}
			for range n {
				select {
				case err := <-results:
					if err == nil {
						t.Error("a publish to a dead broker succeeded")
					}
				case <-time.After(5 * time.Second):
					t.Fatal("publisher not released by Close")
				}
			}
			if st := r.Stats(); st.Failed != n {
				t.Errorf("stats %+v, want %d failed", st, n)
			}
			m.Kill() // the hung broker's connection must end for the leak check
		})
	}
}
