package coapside

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// TestFloodNeverStopsTheServer floods one server from a single source, CON
// and NON, paced and unpaced, many times, with a handler that now and then
// runs longer than a millisecond (as a handler that waits for a broker does),
// and asserts after every run that a fresh client still gets an answer and
// the listener reports itself healthy.
func TestFloodNeverStopsTheServer(t *testing.T) {
	var handled atomic.Int64
	mux := NewServeMux()
	mux.HandleFunc("POST /ingest", func(w ResponseWriter, r *Request) {
		if handled.Add(1)%8 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
		w.SetCode(message.Changed)
	})
	mux.HandleFunc("GET /ping", func(w ResponseWriter, r *Request) { _, _ = w.Write([]byte("pong")) })
	srv, addr := startServer(t, mux, ServerOptions{MaxConcurrent: 32})

	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	specs := []peer.Flood{
		{Type: message.NonConfirmable},
		{Type: message.Confirmable},
		{Type: message.NonConfirmable, Paced: true},
		{Type: message.Confirmable, Paced: true},
	}
	client, err := NewClient(ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	for i := range rounds {
		f := specs[i%len(specs)]
		f.Path = []string{"ingest"}
		f.Length = 300 * time.Millisecond
		sent := f.Run(t, addr)
		// Right after the flood the backlog may still be shed with 5.03 and
		// Max-Age; a client retries. The server must be back within seconds.
		deadline := time.Now().Add(10 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := client.Get(ctx, "coap://"+addr.String()+"/ping")
			cancel()
			if err != nil {
				st := srv.Stats()
				t.Fatalf("round %d (%v, %d sent): no answer after the flood: %v (received %d, handled %d, overloaded %d)",
					i, f, sent, err, st.Received, st.RequestsHandled, st.Overloaded)
			}
			if resp.Code == message.Content && string(resp.Payload) == "pong" {
				break
			}
			if resp.Code != message.ServiceUnavailable || time.Now().After(deadline) {
				t.Fatalf("round %d (%v): got %v %q", i, f, resp.Code, resp.Payload)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := srv.Health(); err != nil {
			t.Fatalf("round %d (%v): Health after the flood: %v", i, f, err)
		}
	}
	// The pool itself must keep a reader; the watchdog is a last resort.
	if n := srv.Stats().ReaderRestarts; n != 0 {
		t.Errorf("the watchdog had to restart readers %d times", n)
	}
	if srv.Stats().Overloaded == 0 {
		t.Logf("no request was shed with 5.03; the floods did not reach MaxConcurrent")
	}
}

// TestWatchdogRestartsAStalledListener breaks the reader pool on purpose (its
// accounting claims surplus idle readers, so the only reader retires) and
// checks that Health reports the stall and the watchdog brings the listener
// back.
func TestWatchdogRestartsAStalledListener(t *testing.T) {
	mux := NewServeMux()
	mux.HandleFunc("GET /ping", func(w ResponseWriter, r *Request) { _, _ = w.Write([]byte("pong")) })
	srv, addr := startServer(t, mux, ServerOptions{IdleReaders: 1})
	e := srv.Endpoints()[0]
	e.poolMu.Lock()
	e.idle += 100 // a lie: every reader now believes it is surplus
	e.poolMu.Unlock()
	p := newRawPeer(t, addr)
	ping := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: 1, Token: []byte{9}}
	ping.Options = ping.Options.Add(message.URIPath, []byte("ping"))
	p.sendMsg(ping)
	p.mustRecv(2 * time.Second) // answered, then the reader retires
	readers := func() int {
		e.poolMu.Lock()
		defer e.poolMu.Unlock()
		return e.total
	}
	testkit.Eventually(t, 5*time.Second, "the last reader to retire", func() bool { return e.reading.Load() == 0 && readers() == 0 })
	if e.Stats().ReaderRestarts.Load() == 0 && !e.stalledAt(time.Now()) {
		t.Fatal("an endpoint with no reader is not reported stalled")
	}
	e.poolMu.Lock()
	e.idle -= 100 // the lie did its harm; the watchdog's reader must stay
	e.poolMu.Unlock()
	testkit.Eventually(t, 5*time.Second, "the watchdog to restart a reader", func() bool { return e.Stats().ReaderRestarts.Load() > 0 })
	ping.MessageID = 2
	p.sendMsg(ping)
	if m := p.mustRecv(2 * time.Second); m.Code != message.Content {
		t.Fatalf("after the restart: %v", m.Code)
	}
	if err := srv.Health(); err != nil {
		t.Fatalf("Health after the restart: %v", err)
	}
}
