package coapside

import (
	"bytes"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// bigBody returns n bytes of a recognizable pattern.
func bigBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// blockOpt encodes a Block1/Block2 option value for a test request.
func blockOpt(t *testing.T, num uint32, more bool, szx uint8) []byte {
	t.Helper()
	b, err := block.Option{Num: num, More: more, SZX: szx}.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// respBlock decodes a response's block option.
func respBlock(t *testing.T, m *message.Message, id message.OptionID) (block.Option, bool) {
	t.Helper()
	v, ok := m.Options.Get(id)
	if !ok {
		return block.Option{}, false
	}
	o, err := block.ParseBytes(v)
	if err != nil {
		t.Fatalf("bad %v in response: %v", id, err)
	}
	return o, true
}

// blockRequest sends a CON request through p and returns the piggybacked response.
func blockRequest(t *testing.T, p *rawPeer, mid uint16, method message.Code, path string, opts message.Options, payload []byte) *message.Message {
	t.Helper()
	m := &message.Message{Type: message.Confirmable, Code: method, MessageID: mid, Token: []byte{byte(mid >> 8), byte(mid)}}
	m.Options = opts.SetPath(path)
	m.Payload = payload
	p.sendMsg(m)
	resp := p.mustRecv(2 * time.Second)
	if resp.Type != message.Acknowledgement || resp.MessageID != mid {
		t.Fatalf("expected ACK for %d, got %v", mid, resp)
	}
	return resp
}

func newBlockServer(t *testing.T, bw BlockwiseOptions, body []byte) (*rawPeer, chan []byte) {
	t.Helper()
	got := make(chan []byte, 4)
	mux := NewServeMux()
	mux.HandleFunc("GET /big", func(w ResponseWriter, r *Request) { _, _ = w.Write(body) })
	mux.HandleFunc("PUT /upload", func(w ResponseWriter, r *Request) {
		got <- r.Payload
		w.SetCode(message.Changed)
	})
	// These tests check RFC 7959 slicing as a client with a verified
	// address sees it; the amplification bound's smaller blocks for
	// unverified sources are tested in amplification_test.go.
	opts := ServerOptions{EndpointOptions: serverTestOpts(), Blockwise: bw, Amplification: AmplificationOptions{Disable: true}}
	_, addr := startServer(t, mux, opts)
	return newRawPeer(t, addr), got
}

func TestBlockwiseServerBlock2(t *testing.T) {
	body := bigBody(3000)
	p, _ := newBlockServer(t, BlockwiseOptions{}, body)
	tests := []struct {
		name     string
		req      []byte // Block2 option of the request, nil for none
		wantNum  uint32
		wantMore bool
		wantSZX  uint8
		wantLen  int
		wantOff  int
		wantSize bool
	}{
		{"no option gets block 0 of 1024", nil, 0, true, 6, 1024, 0, true},
		{"client szx 2 (64 bytes)", blockOpt(t, 0, false, 2), 0, true, 2, 64, 0, true},
		{"middle block", blockOpt(t, 5, false, 2), 5, true, 2, 64, 320, false},
		{"last block of 1024", blockOpt(t, 2, false, 6), 2, false, 6, 3000 - 2048, 2048, false},
		{"M bit of request ignored", blockOpt(t, 1, true, 6), 1, true, 6, 1024, 1024, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts message.Options
			if tc.req != nil {
				opts = opts.Set(message.Block2, tc.req)
			}
			resp := blockRequest(t, p, uint16(100+i), message.GET, "/big", opts, nil)
			if resp.Code != message.Content {
				t.Fatalf("code %v", resp.Code)
			}
			b2, ok := respBlock(t, resp, message.Block2)
			if !ok {
				t.Fatal("no Block2 in response")
			}
			if b2.Num != tc.wantNum || b2.More != tc.wantMore || b2.SZX != tc.wantSZX {
				t.Errorf("Block2 %v, want %d/%v/szx %d", b2, tc.wantNum, tc.wantMore, tc.wantSZX)
			}
			if !bytes.Equal(resp.Payload, body[tc.wantOff:tc.wantOff+tc.wantLen]) {
				t.Errorf("payload %d bytes, want body[%d:+%d]", len(resp.Payload), tc.wantOff, tc.wantLen)
			}
			if _, ok := resp.Options.ETag(); !ok {
				t.Error("no ETag on a block")
			}
			if sz, err := resp.Options.Uint(message.Size2); (err == nil) != tc.wantSize || (err == nil && sz != 3000) {
				t.Errorf("Size2 %d (err %v), want present=%v", sz, err, tc.wantSize)
			}
		})
	}
	// Every block of one representation carries the same ETag.
	r1 := blockRequest(t, p, 200, message.GET, "/big", message.Options{}.Set(message.Block2, blockOpt(t, 0, false, 4)), nil)
	r2 := blockRequest(t, p, 201, message.GET, "/big", message.Options{}.Set(message.Block2, blockOpt(t, 3, false, 4)), nil)
	e1, _ := r1.Options.ETag()
	e2, _ := r2.Options.ETag()
	if !bytes.Equal(e1, e2) {
		t.Errorf("ETag changed between blocks: % x vs % x", e1, e2)
	}
	// A block beyond the end is a bad option (RFC 7959 §2.2).
	r3 := blockRequest(t, p, 202, message.GET, "/big", message.Options{}.Set(message.Block2, blockOpt(t, 100, false, 6)), nil)
	if r3.Code != message.BadOption {
		t.Errorf("block beyond end: code %v, want 4.02", r3.Code)
	}
	// Reserved SZX 7.
	r4 := blockRequest(t, p, 203, message.GET, "/big", message.Options{}.Set(message.Block2, []byte{0x07}), nil)
	if r4.Code != message.BadOption {
		t.Errorf("SZX 7: code %v, want 4.02", r4.Code)
	}
}

func TestBlockwiseServerSmallBodyUntouched(t *testing.T) {
	p, _ := newBlockServer(t, BlockwiseOptions{}, []byte("small"))
	resp := blockRequest(t, p, 1, message.GET, "/big", nil, nil)
	if resp.Options.Has(message.Block2) || resp.Options.Has(message.ETag) || string(resp.Payload) != "small" {
		t.Errorf("small response changed: %v", resp)
	}
}

func TestBlockwiseServerBlock1(t *testing.T) {
	body := bigBody(200)
	type step struct {
		num      uint32
		more     bool
		szx      uint8
		from, to int
		wantCode message.Code
	}
	tests := []struct {
		name  string
		opts  BlockwiseOptions
		steps []step
		want  []byte // body the handler sees, nil when it must not run
	}{
		{
			name: "in order",
			steps: []step{
				{0, true, 2, 0, 64, message.Continue},
				{1, true, 2, 64, 128, message.Continue},
				{2, true, 2, 128, 192, message.Continue},
				{3, false, 2, 192, 200, message.Changed},
			},
			want: body,
		},
		{
			name: "out of order block",
			steps: []step{
				{0, true, 2, 0, 64, message.Continue},
				{2, true, 2, 128, 192, message.RequestEntityIncomplete},
			},
		},
		{
			name: "block without start",
			steps: []step{
				{1, false, 2, 64, 128, message.RequestEntityIncomplete},
			},
		},
		{
			name: "size change mid-transfer to a smaller size",
			steps: []step{
				{0, true, 2, 0, 64, message.Continue},
				{2, true, 1, 64, 96, message.Continue},
				{3, true, 1, 96, 128, message.Continue},
				{4, true, 1, 128, 160, message.Continue},
				{5, true, 1, 160, 192, message.Continue},
				{6, false, 1, 192, 200, message.Changed},
			},
			want: body,
		},
		{
			name: "size grows mid-transfer at a misaligned offset",
			steps: []step{
				{0, true, 1, 0, 32, message.Continue},
				{1, true, 2, 64, 128, message.RequestEntityIncomplete},
			},
		},
		{
			name: "payload shorter than its block size with M set",
			steps: []step{
				{0, true, 2, 0, 50, message.BadRequest},
			},
		},
		{
			name: "body over the maximum",
			opts: BlockwiseOptions{MaxBodySize: 100},
			steps: []step{
				{0, true, 2, 0, 64, message.Continue},
				{1, true, 2, 64, 128, message.RequestEntityTooLarge},
			},
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, got := newBlockServer(t, tc.opts, nil)
			for j, s := range tc.steps {
				opts := message.Options{}.Set(message.Block1, blockOpt(t, s.num, s.more, s.szx))
				resp := blockRequest(t, p, uint16(i*16+j+1), message.PUT, "/upload", opts, body[s.from:s.to])
				if resp.Code != s.wantCode {
					t.Fatalf("step %d: code %v, want %v (%q)", j, resp.Code, s.wantCode, resp.Payload)
				}
				switch s.wantCode {
				case message.Continue, message.Changed:
					b1, ok := respBlock(t, resp, message.Block1)
					if !ok || b1.Num != s.num {
						t.Errorf("step %d: Block1 %v (present %v), want num %d", j, b1, ok, s.num)
					}
				case message.RequestEntityTooLarge:
					if sz, err := resp.Options.Uint(message.Size1); err != nil || sz != 100 {
						t.Errorf("4.13 Size1 = %d, %v; want 100", sz, err)
					}
				}
			}
			select {
			case b := <-got:
				if tc.want == nil {
					t.Fatalf("handler ran with %d bytes", len(b))
				}
				if !bytes.Equal(b, tc.want) {
					t.Errorf("handler body %q, want %q", b, tc.want)
				}
			default:
				if tc.want != nil {
					t.Fatal("handler did not run")
				}
			}
		})
	}
}

func TestBlockwiseServerBlock1Expiry(t *testing.T) {
	body := bigBody(128)
	p, got := newBlockServer(t, BlockwiseOptions{Lifetime: 50 * time.Millisecond}, nil)
	first := message.Options{}.Set(message.Block1, blockOpt(t, 0, true, 2))
	if r := blockRequest(t, p, 1, message.PUT, "/upload", first, body[:64]); r.Code != message.Continue {
		t.Fatalf("block 0: %v", r.Code)
	}
	time.Sleep(120 * time.Millisecond)
	last := message.Options{}.Set(message.Block1, blockOpt(t, 1, false, 2))
	if r := blockRequest(t, p, 2, message.PUT, "/upload", last, body[64:]); r.Code != message.RequestEntityIncomplete {
		t.Fatalf("block 1 after expiry: %v, want 4.08", r.Code)
	}
	select {
	case b := <-got:
		t.Fatalf("handler ran with %d bytes after expiry", len(b))
	default:
	}
}

func TestBlockwiseServerDisabled(t *testing.T) {
	p, _ := newBlockServer(t, BlockwiseOptions{Disable: true}, bigBody(1100))
	resp := blockRequest(t, p, 1, message.GET, "/big", nil, nil)
	if resp.Options.Has(message.Block2) || len(resp.Payload) != 1100 {
		t.Errorf("disabled layer sliced: %d bytes, Block2 %v", len(resp.Payload), resp.Options.Has(message.Block2))
	}
}

func TestBlockSizeFor(t *testing.T) {
	for _, tc := range []struct{ max, want int }{
		{1280, 1024}, {1152, 1024}, {1151, 512}, {600, 256}, {100, 16},
	} {
		if got := blockSizeFor(tc.max); got != tc.want {
			t.Errorf("blockSizeFor(%d) = %d, want %d", tc.max, got, tc.want)
		}
	}
}

// TestBlockwiseServerSweepsOnOtherTraffic abandons a Block1 transfer: a
// later request of any kind frees its buffer.
func TestBlockwiseServerSweepsOnOtherTraffic(t *testing.T) {
	body := bigBody(64)
	mux := NewServeMux()
	mux.HandleFunc("PUT /upload", func(w ResponseWriter, r *Request) {})
	mux.HandleFunc("GET /x", func(w ResponseWriter, r *Request) {})
	srv, addr := startServer(t, mux, ServerOptions{EndpointOptions: serverTestOpts(), Blockwise: BlockwiseOptions{Lifetime: 40 * time.Millisecond}})
	p := newRawPeer(t, addr)
	first := message.Options{}.Set(message.Block1, blockOpt(t, 0, true, 2))
	if r := blockRequest(t, p, 1, message.PUT, "/upload", first, body); r.Code != message.Continue {
		t.Fatalf("block 0: %v", r.Code)
	}
	if st := srv.Blockwise().Stats(); st.Active != 1 || st.Buffered != 64 {
		t.Fatalf("stats after block 0: %+v", st)
	}
	time.Sleep(80 * time.Millisecond)
	blockRequest(t, p, 2, message.GET, "/x", nil, nil)
	if st := srv.Blockwise().Stats(); st.Active != 0 || st.Buffered != 0 || st.Expired != 1 {
		t.Errorf("stats after an unrelated request: %+v", st)
	}
}

// serverTestOpts are fastOpts with a long separate-response delay, so a
// slow run (race detector, busy machine) still piggybacks responses as the
// raw-socket tests expect.
func serverTestOpts() EndpointOptions {
	o := fastOpts()
	o.SeparateAfter = time.Second
	return o
}
