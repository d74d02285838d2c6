package coapside

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// tolerantOpts are short transmission parameters that still survive a
// busy machine: about 3 s before a CON gives up.
func tolerantOpts() EndpointOptions {
	return EndpointOptions{AckTimeout: 100 * time.Millisecond, AckRandomFactor: 1.0, MaxRetransmit: 4, SeparateAfter: 50 * time.Millisecond}
}

// newBlockClient returns a client with the given block-wise options.
func newBlockClient(t *testing.T, bw ClientBlockwiseOptions) *Client {
	t.Helper()
	c, err := NewClient(ClientOptions{EndpointOptions: tolerantOpts(), LocalAddr: "127.0.0.1:0", Blockwise: bw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientBlockwiseRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		client    ClientBlockwiseOptions
		server    BlockwiseOptions
		size      int
		wantMsgs  uint64 // requests the server handles for GET + PUT, at least
		wantExact bool
	}{
		{"1024-byte blocks", ClientBlockwiseOptions{}, BlockwiseOptions{}, 3000, 6, true},
		{"client asks 64", ClientBlockwiseOptions{BlockSize: 64}, BlockwiseOptions{}, 1500, 48, true},
		{"server limits to 64", ClientBlockwiseOptions{}, BlockwiseOptions{BlockSize: 64}, 1500, 24, false},
		{"fits one message", ClientBlockwiseOptions{}, BlockwiseOptions{}, 1000, 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := bigBody(tc.size)
			var stored atomic.Pointer[[]byte]
			mux := NewServeMux()
			mux.HandleFunc("GET /big", func(w ResponseWriter, _ *Request) { _, _ = w.Write(body) })
			mux.HandleFunc("PUT /big", func(w ResponseWriter, r *Request) {
				p := append([]byte(nil), r.Payload...)
				stored.Store(&p)
			})
			// The request counts are those of a client whose address is
			// verified; unverified clients get smaller blocks first
			// (amplification_test.go).
			opts := ServerOptions{EndpointOptions: serverTestOpts(), Blockwise: tc.server, Amplification: AmplificationOptions{Disable: true}}
			srv, addr := startServer(t, mux, opts)
			c := newBlockClient(t, tc.client)
			url := fmt.Sprintf("coap://%s/big", addr)
			resp, err := c.Get(testCtx(t), url)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(resp.Payload, body) || resp.Options.Has(message.Block2) {
				t.Fatalf("GET body %d bytes (want %d), Block2 left %v", len(resp.Payload), len(body), resp.Options.Has(message.Block2))
			}
			resp, err = c.Put(testCtx(t), url, message.TextPlain, body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != message.Changed {
				t.Fatalf("PUT code %v (%q)", resp.Code, resp.Payload)
			}
			if p := stored.Load(); p == nil || !bytes.Equal(*p, body) {
				t.Fatal("server handler did not get the whole body")
			}
			n := srv.Endpoints()[0].Stats().RequestsHandled.Load()
			if n < tc.wantMsgs || tc.wantExact && n != tc.wantMsgs {
				t.Errorf("server handled %d requests, want %d (exact %v)", n, tc.wantMsgs, tc.wantExact)
			}
		})
	}
}

func TestClientBlockwiseLimits(t *testing.T) {
	body := bigBody(3000)
	mux := NewServeMux()
	mux.HandleFunc("GET /big", func(w ResponseWriter, _ *Request) { _, _ = w.Write(body) })
	mux.HandleFunc("PUT /big", func(w ResponseWriter, _ *Request) {})
	_, addr := startServer(t, mux, ServerOptions{EndpointOptions: serverTestOpts(), Blockwise: BlockwiseOptions{MaxBodySize: 2000}})
	c := newBlockClient(t, ClientBlockwiseOptions{MaxBodySize: 2000})
	url := fmt.Sprintf("coap://%s/big", addr)
	// The response announces Size2 3000, over the client's limit.
	_, err := c.Get(testCtx(t), url)
	if !errors.Is(err, ErrBlockwise) || !errors.Is(err, block.ErrTooLarge) {
		t.Errorf("GET over the limit: %v", err)
	}
	// The server's limit: 4.13 with Size1 comes back as the response.
	resp, err := c.Put(testCtx(t), url, message.TextPlain, body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != message.RequestEntityTooLarge {
		t.Errorf("PUT over the server limit: %v", resp.Code)
	}
	if sz, err := resp.Options.Uint(message.Size1); err != nil || sz != 2000 {
		t.Errorf("Size1 %d %v", sz, err)
	}
}

// TestClientBlockwiseRepresentationChanges changes the body between blocks:
// the ETag changes and the client restarts from block 0 (RFC 7959 §2.4).
func TestClientBlockwiseRepresentationChanges(t *testing.T) {
	var version atomic.Int32
	mux := NewServeMux()
	mux.HandleFunc("GET /v", func(w ResponseWriter, r *Request) {
		v := version.Add(1)
		if v > 2 {
			v = 2 // stable after the first change
		}
		b := bytes.Repeat([]byte{byte('0' + v)}, 200)
		_, _ = w.Write(b)
	})
	_, addr := startServer(t, mux, ServerOptions{EndpointOptions: serverTestOpts()})
	c := newBlockClient(t, ClientBlockwiseOptions{BlockSize: 64})
	resp, err := c.Get(testCtx(t), fmt.Sprintf("coap://%s/v", addr))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.Payload, bytes.Repeat([]byte{'2'}, 200)) {
		t.Errorf("mixed representation: %q", resp.Payload)
	}
}

// TestClientBlockwiseOutOfOrderBlock has a server answer block 1 with block
// 2: the client gives up with ErrBlockwise instead of assembling garbage.
func TestClientBlockwiseOutOfOrderBlock(t *testing.T) {
	body := bigBody(200)
	mux := NewServeMux()
	mux.HandleFunc("GET /bad", func(w ResponseWriter, r *Request) {
		num := uint32(0)
		if v, ok := r.Options.Get(message.Block2); ok {
			o, _ := block.ParseBytes(v)
			num = o.Num + 1 // skip one
		}
		o := block.Option{Num: num, More: true, SZX: 2}
		val, _ := o.Value()
		*w.Options() = w.Options().SetUint(message.Block2, val)
		_, _ = w.Write(body[:64])
	})
	_, addr := startServer(t, mux, ServerOptions{EndpointOptions: serverTestOpts()})
	c := newBlockClient(t, ClientBlockwiseOptions{})
	_, err := c.Get(testCtx(t), fmt.Sprintf("coap://%s/bad", addr))
	if !errors.Is(err, ErrBlockwise) || !errors.Is(err, block.ErrUnexpectedBlock) {
		t.Errorf("out-of-order block: %v", err)
	}
}

// TestClientBlockwiseConcurrentUploads sends two bodies to the same resource
// at once: the Request-Tag keeps their Block1 transfers apart (RFC 9175 §3).
func TestClientBlockwiseConcurrentUploads(t *testing.T) {
	got := make(chan []byte, 2)
	mux := NewServeMux()
	mux.HandleFunc("PUT /up", func(w ResponseWriter, r *Request) { got <- append([]byte(nil), r.Payload...) })
	_, addr := startServer(t, mux, ServerOptions{EndpointOptions: serverTestOpts()})
	c := newBlockClient(t, ClientBlockwiseOptions{BlockSize: 64})
	bodies := [][]byte{bytes.Repeat([]byte("A"), 1000), bytes.Repeat([]byte("B"), 1000)}
	errs := make(chan error, 2)
	for _, b := range bodies {
		go func() {
			resp, err := c.Put(testCtx(t), fmt.Sprintf("coap://%s/up", addr), message.TextPlain, b)
			if err == nil && resp.Code != message.Changed {
				err = fmt.Errorf("code %v %q", resp.Code, resp.Payload)
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		b := <-got
		if !bytes.Equal(b, bodies[0]) && !bytes.Equal(b, bodies[1]) {
			t.Errorf("mixed body %q...", b[:80])
		}
	}
}
