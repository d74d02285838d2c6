package coapside

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// identConn hides the UDP socket type (so the generic PacketConn path runs)
// and authenticates every peer as "dev-<port>", like the DTLS transport.
type identConn struct {
	net.PacketConn
	reads atomic.Int64
}

func (c *identConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.reads.Add(1)
	return c.PacketConn.ReadFrom(b)
}

func (c *identConn) PeerIdentity(a net.Addr) (string, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return "", false
	}
	return "dev-" + strconv.Itoa(u.Port), true
}

func TestServeOnWrappedPacketConnWithPeerIdentity(t *testing.T) {
	raw, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conn := &identConn{PacketConn: raw}
	mux := NewServeMux()
	mux.HandleFunc("GET /whoami", func(w ResponseWriter, r *Request) {
		id, ok := r.PeerIdentity()
		if !ok || r.Conn() != conn || r.Endpoint() == nil {
			w.SetCode(message.Unauthorized)
			return
		}
		_, _ = w.Write([]byte(id))
	})
	s := &Server{Handler: mux, Options: ServerOptions{EndpointOptions: fastOpts()}}
	done := make(chan error, 1)
	go func() { done <- s.Serve(conn) }()
	defer func() {
		_ = s.Close()
		<-done
	}()
	c := newTestClient(t)
	resp, err := c.Get(testCtx(t), "coap://"+raw.LocalAddr().String()+"/whoami")
	if err != nil {
		t.Fatal(err)
	}
	want := "dev-" + strconv.Itoa(c.Endpoint().LocalAddr().(*net.UDPAddr).Port)
	if resp.Code != message.Content || string(resp.Payload) != want {
		t.Fatalf("got %v %q, want %q", resp.Code, resp.Payload, want)
	}
	if conn.reads.Load() == 0 {
		t.Fatal("server did not read through the wrapper")
	}
}

func TestShutdownDrainsRunningHandlers(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	mux := NewServeMux()
	mux.HandleFunc("/work", func(w ResponseWriter, r *Request) {
		close(entered)
		<-release
		_, _ = w.Write([]byte("finished"))
	})
	opts := fastOpts()
	opts.SeparateAfter = 5 * time.Second
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: mux, Options: ServerOptions{EndpointOptions: opts}}
	done := make(chan error, 1)
	go func() { done <- s.Serve(conn) }()
	testkit.Eventually(t, time.Second, "server start", func() bool { return len(s.Endpoints()) == 1 })
	addr := conn.LocalAddr().(*net.UDPAddr)
	p := newRawPeer(t, addr)
	p.send([]byte{0x40, 0x01, 0x07, 0x00, 0xb4, 'w', 'o', 'r', 'k'})
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// While draining, new requests get 5.03 with Max-Age.
	testkit.Eventually(t, time.Second, "draining", func() bool { return s.Endpoints()[0].draining.Load() })
	p.send([]byte{0x40, 0x01, 0x07, 0x01, 0xb4, 'w', 'o', 'r', 'k'})
	if m := p.mustRecv(time.Second); m.MessageID != 0x0701 || m.Code != message.ServiceUnavailable || !m.Options.Has(message.MaxAge) {
		t.Fatalf("request during drain got %v", m)
	}
	close(release)
	if m := p.mustRecv(time.Second); m.MessageID != 0x0700 || string(m.Payload) != "finished" {
		t.Fatalf("drained response %v", m)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	// Idempotent, and Serve after Shutdown refuses.
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	c2, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(c2); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown = %v", err)
	}
}

func TestShutdownDeadlineCancelsHandlers(t *testing.T) {
	entered := make(chan struct{})
	h := HandlerFunc(func(w ResponseWriter, r *Request) {
		close(entered)
		<-r.Context().Done() // ends when the server closes
	})
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, Options: ServerOptions{EndpointOptions: fastOpts()}}
	done := make(chan error, 1)
	go func() { done <- s.Serve(conn) }()
	testkit.Eventually(t, time.Second, "server start", func() bool { return len(s.Endpoints()) == 1 })
	p := newRawPeer(t, conn.LocalAddr().(*net.UDPAddr))
	p.send([]byte{0x50, 0x01, 0x08, 0x00})
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
}

func TestSchedulerOrderCancelReschedule(t *testing.T) {
	s := newScheduler()
	defer s.stop()
	got := make(chan int, 8)
	now := time.Now()
	s.schedule(now.Add(30*time.Millisecond), func(time.Time) { got <- 3 })
	s.schedule(now.Add(10*time.Millisecond), func(time.Time) { got <- 1 })
	cancelled := s.schedule(now.Add(20*time.Millisecond), func(time.Time) { got <- 99 })
	moved := s.schedule(now.Add(time.Hour), func(time.Time) { got <- 2 })
	if !s.cancel(cancelled) {
		t.Fatal("cancel of a pending item failed")
	}
	s.reschedule(moved, now.Add(20*time.Millisecond))
	for _, want := range []int{1, 2, 3} {
		select {
		case v := <-got:
			if v != want {
				t.Fatalf("fired %d, want %d", v, want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("item %d never fired", want)
		}
	}
	if s.cancel(cancelled) {
		t.Fatal("second cancel reported success")
	}
}

// TestServeSameConnTwice: a second Serve on a conn the server already
// serves returns ErrServerStarted at once and leaves the conn to the first.
func TestServeSameConnTwice(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: HandlerFunc(func(w ResponseWriter, r *Request) { _, _ = w.Write([]byte("one")) }),
		Options: ServerOptions{EndpointOptions: fastOpts()}}
	var serving sync.WaitGroup
	t.Cleanup(func() {
		_ = s.Close()
		serving.Wait()
	})
	serving.Go(func() { _ = s.Serve(conn) })
	testkit.Eventually(t, time.Second, "server start", func() bool { return len(s.Endpoints()) == 1 })

	again := make(chan error, 1)
	serving.Go(func() { again <- s.Serve(conn) })
	select {
	case err := <-again:
		if !errors.Is(err, ErrServerStarted) {
			t.Fatalf("second Serve = %v, want ErrServerStarted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Serve on the same conn did not return")
	}
	if n := len(s.Endpoints()); n != 1 {
		t.Fatalf("%d endpoints serve the conn, want 1", n)
	}
	p := newRawPeer(t, conn.LocalAddr().(*net.UDPAddr))
	p.send([]byte{0x40, 0x01, 0x09, 0x00}) // CON GET, MID 0x0900
	if m := p.mustRecv(time.Second); m.MessageID != 0x0900 || string(m.Payload) != "one" {
		t.Fatalf("first Serve no longer answers: %v", m)
	}
}

// uncomparableConn is a PacketConn value that == would panic on.
type uncomparableConn struct {
	net.PacketConn
	_ []string // a slice makes the struct uncomparable
}

func TestSameConn(t *testing.T) {
	a, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	u := uncomparableConn{PacketConn: a}
	for _, tt := range []struct {
		name string
		x, y net.PacketConn
		want bool
	}{
		{"same", a, a, true},
		{"different", a, b, false},
		{"wrapped", a, &identConn{PacketConn: a}, false},
		{"uncomparable", u, u, false},
	} {
		if got := sameConn(tt.x, tt.y); got != tt.want {
			t.Errorf("%s: sameConn = %v, want %v", tt.name, got, tt.want)
		}
	}
}
