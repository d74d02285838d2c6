package coapside

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
)

func echoMux() *ServeMux {
	mux := NewServeMux()
	mux.HandleFunc("GET /ping", func(w ResponseWriter, r *Request) {
		w.SetContentFormat(message.TextPlain)
		_, _ = io.WriteString(w, "pong")
	})
	mux.HandleFunc("/echo/{rest...}", func(w ResponseWriter, r *Request) {
		if cf, ok := r.Options.ContentFormat(); ok {
			w.SetContentFormat(cf)
		}
		_, _ = fmt.Fprintf(w, "%v %s %q %s", r.Method, r.PathValue("rest"), r.Queries(), r.Payload)
	})
	mux.HandleFunc("GET /slow", func(w ResponseWriter, r *Request) {
		time.Sleep(120 * time.Millisecond)
		_, _ = io.WriteString(w, "late")
	})
	mux.HandleFunc("DELETE /thing", func(w ResponseWriter, r *Request) {})
	return mux
}

func newTestClient(t *testing.T) *Client {
	t.Helper()
	c, err := NewClient(ClientOptions{EndpointOptions: fastOpts(), LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientAgainstServer(t *testing.T) {
	for _, batching := range []bool{true, false} {
		t.Run(fmt.Sprintf("batching=%v", batching), func(t *testing.T) {
			opts := fastOpts()
			opts.DisableBatching = !batching
			testClientAgainstServer(t, opts)
		})
	}
}

func testClientAgainstServer(t *testing.T, opts EndpointOptions) {
	_, addr := startServer(t, echoMux(), ServerOptions{EndpointOptions: opts})
	c := newTestClient(t)
	base := "coap://" + addr.String()
	ctx := testCtx(t)
	tests := []struct {
		name     string
		do       func() (*Response, error)
		wantCode message.Code
		wantBody string
	}{
		{"GET piggybacked", func() (*Response, error) { return c.Get(ctx, base+"/ping") }, message.Content, "pong"},
		{"GET NON", func() (*Response, error) { return c.Get(ctx, base+"/ping", NonConfirmable()) }, message.Content, "pong"},
		{"POST with query and payload", func() (*Response, error) {
			return c.Post(ctx, base+"/echo/a/b?x=1&y=%26", message.AppJSON, []byte(`{"v":1}`))
		}, message.Changed, `POST a/b ["x=1" "y=&"] {"v":1}`},
		{"PUT NON", func() (*Response, error) {
			return c.Put(ctx, base+"/echo/p", message.TextPlain, []byte("hi"), NonConfirmable())
		}, message.Changed, `PUT p [] hi`},
		{"DELETE", func() (*Response, error) { return c.Delete(ctx, base+"/thing") }, message.Deleted, ""},
		{"separate response", func() (*Response, error) { return c.Get(ctx, base+"/slow") }, message.Content, "late"},
		{"not found", func() (*Response, error) { return c.Get(ctx, base+"/nope") }, message.NotFound, ""},
		{"method not allowed", func() (*Response, error) { return c.Post(ctx, base+"/ping", message.TextPlain, nil) }, message.MethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.do()
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != tt.wantCode || string(resp.Payload) != tt.wantBody {
				t.Fatalf("got %v %q, want %v %q", resp.Code, resp.Payload, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestClientConcurrentExchanges(t *testing.T) {
	_, addr := startServer(t, echoMux(), ServerOptions{EndpointOptions: fastOpts()})
	opts := fastOpts()
	opts.NStart = 8
	c, err := NewClient(ClientOptions{EndpointOptions: opts, LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("GET n%d [] ", i)
			resp, err := c.Get(ctx, fmt.Sprintf("coap://%s/echo/n%d", addr, i))
			if err != nil {
				errs <- err
				return
			}
			if string(resp.Payload) != want {
				errs <- fmt.Errorf("got %q want %q", resp.Payload, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestClientContextCancel(t *testing.T) {
	release := make(chan struct{})
	h := HandlerFunc(func(w ResponseWriter, r *Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	_, addr := startServer(t, h, ServerOptions{EndpointOptions: fastOpts()})
	defer close(release)
	c := newTestClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Get(ctx, "coap://"+addr.String()+"/block")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("cancellation took too long")
	}
}

func TestClientTimeoutWithoutServer(t *testing.T) {
	silent := newRawPeer(t, nil)
	c := newTestClient(t)
	_, err := c.Get(testCtx(t), "coap://"+silent.addr().String()+"/x")
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	// 1 transmission + MaxRetransmit (2) retransmissions reached the peer.
	n := 0
	for {
		if _, _, ok := silent.recv(20 * time.Millisecond); !ok {
			break
		}
		n++
	}
	if n != 3 {
		t.Fatalf("peer saw %d transmissions, want 3", n)
	}
	if got := c.Endpoint().Stats().Retransmissions.Load(); got != 2 {
		t.Fatalf("Retransmissions = %d", got)
	}
}

// TestClientNotSentBehindNSTART: a request whose context ends while it
// waits behind an unanswered one to the same peer (NSTART 1) reports
// ErrNotSent with the context's error, and never reaches the peer; the
// request that did leave reports the context's error alone.
func TestClientNotSentBehindNSTART(t *testing.T) {
	silent := newRawPeer(t, nil)
	opts := fastOpts()
	opts.AckTimeout = 200 * time.Millisecond // retransmitting until 1.4 s, past both deadlines
	c, err := NewClient(ClientOptions{EndpointOptions: opts, LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	url := "coap://" + silent.addr().String()
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := c.Get(ctx, url+"/first")
		first <- err
	}()
	m, _, ok := silent.recv(time.Second)
	if !ok {
		t.Fatal("the first request did not reach the peer")
	}
	firstMID := m.MessageID
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Get(ctx, url+"/second")
	if !errors.Is(err, ErrNotSent) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued request: err = %v, want ErrNotSent and DeadlineExceeded", err)
	}
	if err := <-first; errors.Is(err, ErrNotSent) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sent request: err = %v, want DeadlineExceeded without ErrNotSent", err)
	}
	for {
		m, _, ok := silent.recv(50 * time.Millisecond)
		if !ok {
			break
		}
		if m.MessageID != firstMID {
			t.Fatalf("the peer got %v MID %#x besides the first request's retransmissions", m.Code, m.MessageID)
		}
	}
}

func TestClientReset(t *testing.T) {
	peer := newRawPeer(t, nil)
	c := newTestClient(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Get(testCtx(t), "coap://"+peer.addr().String()+"/x")
		errc <- err
	}()
	m, from, ok := peer.recv(2 * time.Second)
	if !ok {
		t.Fatal("no request")
	}
	peer.to = from
	peer.send(appendEmpty(nil, message.Reset, m.MessageID))
	if err := <-errc; !errors.Is(err, ErrReset) {
		t.Fatalf("err = %v, want ErrReset", err)
	}
}

func TestClientServerAddressFamilies(t *testing.T) {
	tests := []struct {
		name, listen, target string
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6 literal", "[::1]:0", "[::1]"},
		{"dual-stack socket, ipv4 client", ":0", "127.0.0.1"},
		{"dual-stack socket, ipv6 client", ":0", "[::1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.ListenPacket("udp", tt.listen)
			if err != nil {
				peer.Unavailable(t, "cannot listen on %s: %v", tt.listen, err)
			}
			s := &Server{Handler: echoMux(), Options: ServerOptions{EndpointOptions: fastOpts()}}
			done := make(chan error, 1)
			go func() { done <- s.Serve(conn) }()
			defer func() {
				_ = s.Close()
				<-done
			}()
			c, err := NewClient(ClientOptions{EndpointOptions: fastOpts()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			port := conn.LocalAddr().(*net.UDPAddr).Port
			for _, nonOpt := range [][]RequestOption{nil, {NonConfirmable()}} {
				resp, err := c.Get(testCtx(t), fmt.Sprintf("coap://%s:%d/ping", tt.target, port), nonOpt...)
				if err != nil {
					t.Fatal(err)
				}
				if string(resp.Payload) != "pong" {
					t.Fatalf("payload %q", resp.Payload)
				}
			}
		})
	}
}
