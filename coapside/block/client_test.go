package block

import (
	"bytes"
	"errors"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

func TestSender(t *testing.T) {
	b := body(1300)
	s, err := NewSender(b, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if s.Size1() != 1300 {
		t.Fatalf("Size1 = %d", s.Size1())
	}
	o, p := s.Current()
	if o != (Option{Num: 0, More: true, SZX: 6}) || !bytes.Equal(p, b[:1024]) {
		t.Fatalf("first block %s, %d bytes", o, len(p))
	}
	// The server asks for 128-byte blocks: the next block number is 8.
	if err := s.Continue(Option{Num: 0, More: true, SZX: 3}); err != nil {
		t.Fatal(err)
	}
	o, p = s.Current()
	if o != (Option{Num: 8, More: true, SZX: 3}) || !bytes.Equal(p, b[1024:1152]) {
		t.Fatalf("second block %s, %d bytes", o, len(p))
	}
	// A larger SZX in the response is not adopted.
	if err := s.Continue(Option{Num: 8, More: true, SZX: 6}); err != nil {
		t.Fatal(err)
	}
	o, p = s.Current()
	if o != (Option{Num: 9, More: true, SZX: 3}) || !bytes.Equal(p, b[1152:1280]) {
		t.Fatalf("third block %s, %d bytes", o, len(p))
	}
	if err := s.Continue(Option{Num: 9, More: true, SZX: 3}); err != nil {
		t.Fatal(err)
	}
	o, p = s.Current()
	if o != (Option{Num: 10, More: false, SZX: 3}) || !bytes.Equal(p, b[1280:]) {
		t.Fatalf("last block %s, %d bytes", o, len(p))
	}
	if err := s.Continue(Option{Num: 10, More: true, SZX: 3}); !errors.Is(err, ErrDone) {
		t.Fatalf("Continue after last block: %v", err)
	}
}

func TestSenderErrors(t *testing.T) {
	if _, err := NewSender(nil, 1000); !errors.Is(err, ErrBadSize) {
		t.Errorf("bad size: %v", err)
	}
	if _, err := NewSender(make([]byte, (MaxNum+1)*16+1), 16); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too many blocks: %v", err)
	}
	s, _ := NewSender(body(100), 16)
	if err := s.Continue(Option{SZX: 7}); !errors.Is(err, ErrReservedSZX) {
		t.Errorf("reserved SZX in response: %v", err)
	}
}

func TestReceiver(t *testing.T) {
	b := body(2500)
	etag := []byte{1, 2}
	blk := func(num uint32, more bool, szx uint8, from, to int) Response {
		return Response{Block: Option{Num: num, More: more, SZX: szx}, HasBlock: true, ETag: etag, Payload: b[from:to]}
	}
	tests := []struct {
		name      string
		blockSize int
		resps     []Response
		nexts     []Option // expected Next after each non-final response
		want      []byte
	}{
		{"no block option", 0, []Response{{Payload: b[:10]}}, nil, b[:10]},
		{
			"three blocks", 0,
			[]Response{blk(0, true, 6, 0, 1024), blk(1, true, 6, 1024, 2048), blk(2, false, 6, 2048, 2500)},
			[]Option{{Num: 1, SZX: 6}, {Num: 2, SZX: 6}},
			b,
		},
		{
			"client prefers smaller blocks", 256,
			[]Response{blk(0, true, 6, 0, 1024), blk(4, true, 4, 1024, 1280), blk(5, false, 4, 1280, 1300)},
			[]Option{{Num: 4, SZX: 4}, {Num: 5, SZX: 4}},
			b[:1300],
		},
		{
			"server uses smaller blocks", 0,
			[]Response{blk(0, true, 1, 0, 32), blk(1, false, 1, 32, 40)},
			[]Option{{Num: 1, SZX: 1}},
			b[:40],
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewReceiver(ReceiverOptions{BlockSize: tt.blockSize})
			if err != nil {
				t.Fatal(err)
			}
			var st Step
			for i, resp := range tt.resps {
				st, err = r.Add(resp)
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				if i < len(tt.resps)-1 {
					if st.Done || st.Next != tt.nexts[i] {
						t.Fatalf("response %d: done=%v next %s, want %s", i, st.Done, st.Next, tt.nexts[i])
					}
				}
			}
			if !st.Done || !bytes.Equal(st.Body, tt.want) {
				t.Fatalf("done=%v body %d bytes, want %d", st.Done, len(st.Body), len(tt.want))
			}
			if _, err := r.Add(tt.resps[0]); !errors.Is(err, ErrDone) {
				t.Fatalf("Add after done: %v", err)
			}
		})
	}
}

func TestReceiverETagChange(t *testing.T) {
	old, cur := body(2048), bytes.Repeat([]byte{0x55}, 1500)
	r, _ := NewReceiver(ReceiverOptions{MaxRestarts: 1})
	st, err := r.Add(Response{Block: Option{More: true, SZX: 6}, HasBlock: true, ETag: []byte{1}, Payload: old[:1024]})
	if err != nil || st.Next != (Option{Num: 1, SZX: 6}) {
		t.Fatalf("first: %+v %v", st, err)
	}
	// The representation changed between blocks: start over from block 0.
	st, err = r.Add(Response{Block: Option{Num: 1, SZX: 6}, HasBlock: true, ETag: []byte{2}, Payload: cur[1024:]})
	if err != nil || !st.Restart || st.Done || st.Next != (Option{Num: 0, SZX: 6}) {
		t.Fatalf("after change: %+v %v", st, err)
	}
	st, err = r.Add(Response{Block: Option{More: true, SZX: 6}, HasBlock: true, ETag: []byte{2}, Payload: cur[:1024]})
	if err != nil || st.Next != (Option{Num: 1, SZX: 6}) {
		t.Fatalf("restart block 0: %+v %v", st, err)
	}
	st, err = r.Add(Response{Block: Option{Num: 1, SZX: 6}, HasBlock: true, ETag: []byte{2}, Payload: cur[1024:]})
	if err != nil || !st.Done || !bytes.Equal(st.Body, cur) {
		t.Fatalf("final: done=%v %d bytes %v", st.Done, len(st.Body), err)
	}

	// A second change exceeds MaxRestarts.
	r, _ = NewReceiver(ReceiverOptions{MaxRestarts: 1})
	for i, tag := range []byte{1, 2, 3} {
		_, err = r.Add(Response{Block: Option{More: true, SZX: 6}, HasBlock: true, ETag: []byte{tag}, Payload: old[:1024]})
		if i < 2 && err != nil {
			t.Fatalf("block 0 with ETag %d: %v", tag, err)
		}
	}
	if !errors.Is(err, ErrETagChanged) {
		t.Fatalf("third ETag: %v", err)
	}
}

func TestReceiverErrors(t *testing.T) {
	b := body(4096)
	tests := []struct {
		name  string
		opts  ReceiverOptions
		resps []Response
		want  error
	}{
		{"gap", ReceiverOptions{}, []Response{
			{Block: Option{More: true, SZX: 6}, HasBlock: true, Payload: b[:1024]},
			{Block: Option{Num: 2, SZX: 6}, HasBlock: true, Payload: b[2048:2100]},
		}, ErrUnexpectedBlock},
		{"first block not 0", ReceiverOptions{}, []Response{
			{Block: Option{Num: 1, SZX: 6}, HasBlock: true, Payload: b[:10]},
		}, ErrUnexpectedBlock},
		{"short block with M", ReceiverOptions{}, []Response{
			{Block: Option{More: true, SZX: 6}, HasBlock: true, Payload: b[:1000]},
		}, ErrBlockSize},
		{"too large", ReceiverOptions{MaxBodySize: 2000}, []Response{
			{Block: Option{More: true, SZX: 6}, HasBlock: true, Payload: b[:1024]},
			{Block: Option{Num: 1, More: true, SZX: 6}, HasBlock: true, Payload: b[1024:2048]},
		}, ErrTooLarge},
		{"Size2 over limit", ReceiverOptions{MaxBodySize: 2000}, []Response{
			{Block: Option{More: true, SZX: 6}, HasBlock: true, Size2: 4096, Payload: b[:1024]},
		}, ErrTooLarge},
		{"reserved szx", ReceiverOptions{}, []Response{
			{Block: Option{SZX: 7}, HasBlock: true},
		}, ErrReservedSZX},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := NewReceiver(tt.opts)
			var err error
			for _, resp := range tt.resps {
				if _, err = r.Add(resp); err != nil {
					break
				}
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestSenderAssemblerRoundTrip runs a client Sender against a server
// Assembler for several body lengths and server block sizes.
func TestSenderAssemblerRoundTrip(t *testing.T) {
	for _, n := range []int{1, 16, 17, 1024, 1025, 5000} {
		for _, serverSize := range []int{16, 128, 1024} {
			b := body(n)
			a, _ := newAssembler(t, AssemblerOptions{BlockSize: serverSize})
			s, err := NewSender(b, 1024)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			for i := 0; i < 1000; i++ {
				o, p := s.Current()
				d := a.Receive(key, Request{Block: o, Payload: p})
				if d.Complete {
					got = d.Body
					break
				}
				if d.Code != message.Continue {
					t.Fatalf("n=%d server=%d: %v %v", n, serverSize, d.Code, d.Err)
				}
				if err := s.Continue(d.Block1); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, b) {
				t.Fatalf("n=%d server=%d: got %d bytes", n, serverSize, len(got))
			}
		}
	}
}

// TestSliceReceiverRoundTrip fetches bodies with a Receiver from SliceBody.
func TestSliceReceiverRoundTrip(t *testing.T) {
	for _, n := range []int{0, 10, 1024, 1025, 4000} {
		for _, clientSize := range []int{16, 256, 1024} {
			b := body(n)
			r, _ := NewReceiver(ReceiverOptions{BlockSize: clientSize})
			req, hasReq := Option{}, false
			var got []byte
			for i := 0; i < 1000; i++ {
				sl, err := SliceBody(b, req, hasReq, 5)
				if err != nil {
					t.Fatal(err)
				}
				st, err := r.Add(Response{Block: sl.Block, HasBlock: sl.Blockwise, Payload: sl.Payload, Size2: sl.Size2})
				if err != nil {
					t.Fatalf("n=%d client=%d: %v", n, clientSize, err)
				}
				if st.Done {
					got = st.Body
					break
				}
				req, hasReq = st.Next, true
			}
			if !bytes.Equal(got, b) {
				t.Fatalf("n=%d client=%d: got %d bytes", n, clientSize, len(got))
			}
		}
	}
}
