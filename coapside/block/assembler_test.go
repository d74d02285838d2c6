package block

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func newAssembler(t *testing.T, opts AssemblerOptions) (*Assembler, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	opts.Now = clk.Now
	a, err := NewAssembler(opts)
	if err != nil {
		t.Fatal(err)
	}
	return a, clk
}

var key = Key{Peer: "127.0.0.1:5683", Path: "/upload"}

// step is one block sent by a client and the expected answer.
type step struct {
	num      uint32
	more     bool
	szx      uint8
	from, to int // payload = body[from:to]
	size1    uint32
	code     message.Code // 0 when complete
	block1   *Option      // expected Block1 in the answer, nil when none
	size1Out uint32
}

func runSteps(t *testing.T, a *Assembler, b []byte, steps []step) Decision {
	t.Helper()
	var d Decision
	for i, s := range steps {
		d = a.Receive(key, Request{
			Block:   Option{Num: s.num, More: s.more, SZX: s.szx},
			Payload: b[s.from:s.to],
			Size1:   s.size1,
		})
		if s.code == 0 {
			if !d.Complete {
				t.Fatalf("step %d: not complete: code %v err %v", i, d.Code, d.Err)
			}
		} else if d.Complete || d.Code != s.code {
			t.Fatalf("step %d: complete=%v code %v (err %v), want %v", i, d.Complete, d.Code, d.Err, s.code)
		}
		if s.block1 != nil && (!d.HasBlock1 || d.Block1 != *s.block1) {
			t.Fatalf("step %d: Block1 %v (has %v), want %v", i, d.Block1, d.HasBlock1, *s.block1)
		}
		if s.block1 == nil && d.HasBlock1 {
			t.Fatalf("step %d: unexpected Block1 %v", i, d.Block1)
		}
		if d.Size1 != s.size1Out {
			t.Fatalf("step %d: Size1 %d, want %d", i, d.Size1, s.size1Out)
		}
	}
	return d
}

func opt(num uint32, more bool, szx uint8) *Option { return &Option{Num: num, More: more, SZX: szx} }

func TestAssembler(t *testing.T) {
	b := body(3000)
	tests := []struct {
		name  string
		opts  AssemblerOptions
		steps []step
		body  []byte // expected complete body; nil when the last step is an error
	}{
		{
			name: "single block",
			steps: []step{
				{num: 0, more: false, szx: 6, from: 0, to: 500, block1: opt(0, false, 6)},
			},
			body: b[:500],
		},
		{
			name: "in order",
			steps: []step{
				{num: 0, more: true, szx: 6, from: 0, to: 1024, code: message.Continue, block1: opt(0, true, 6)},
				{num: 1, more: true, szx: 6, from: 1024, to: 2048, code: message.Continue, block1: opt(1, true, 6)},
				{num: 2, more: false, szx: 6, from: 2048, to: 3000, block1: opt(2, false, 6)},
			},
			body: b,
		},
		{
			name: "duplicate block is answered again",
			steps: []step{
				{num: 0, more: true, szx: 5, from: 0, to: 512, code: message.Continue, block1: opt(0, true, 5)},
				{num: 1, more: true, szx: 5, from: 512, to: 1024, code: message.Continue, block1: opt(1, true, 5)},
				{num: 1, more: true, szx: 5, from: 512, to: 1024, code: message.Continue, block1: opt(1, true, 5)},
				{num: 2, more: false, szx: 5, from: 1024, to: 1100, block1: opt(2, false, 5)},
			},
			body: b[:1100],
		},
		{
			name: "out of order gives 4.08",
			steps: []step{
				{num: 0, more: true, szx: 6, from: 0, to: 1024, code: message.Continue, block1: opt(0, true, 6)},
				{num: 2, more: false, szx: 6, from: 2048, to: 3000, code: message.RequestEntityIncomplete},
				// The transfer is gone: the next block is also incomplete.
				{num: 1, more: true, szx: 6, from: 1024, to: 2048, code: message.RequestEntityIncomplete},
			},
		},
		{
			name: "block without first block gives 4.08",
			steps: []step{
				{num: 1, more: false, szx: 6, from: 1024, to: 1100, code: message.RequestEntityIncomplete},
			},
		},
		{
			name: "server asks for smaller blocks",
			opts: AssemblerOptions{BlockSize: 256},
			steps: []step{
				// The client sent 1024 bytes; the server answers SZX 4 (256).
				{num: 0, more: true, szx: 6, from: 0, to: 1024, code: message.Continue, block1: opt(0, true, 4)},
				// RFC 7959 §2.3: the next block number counts in the new size.
				{num: 4, more: true, szx: 4, from: 1024, to: 1280, code: message.Continue, block1: opt(4, true, 4)},
				{num: 5, more: false, szx: 4, from: 1280, to: 1300, block1: opt(5, false, 4)},
			},
			body: b[:1300],
		},
		{
			name: "client reduces size on its own",
			steps: []step{
				{num: 0, more: true, szx: 6, from: 0, to: 1024, code: message.Continue, block1: opt(0, true, 6)},
				{num: 2, more: true, szx: 5, from: 1024, to: 1536, code: message.Continue, block1: opt(2, true, 5)},
				{num: 96, more: true, szx: 0, from: 1536, to: 1552, code: message.Continue, block1: opt(96, true, 0)},
				{num: 97, more: false, szx: 0, from: 1552, to: 1560, block1: opt(97, false, 0)},
			},
			body: b[:1560],
		},
		{
			name: "size change with wrong offset gives 4.08",
			steps: []step{
				{num: 0, more: true, szx: 6, from: 0, to: 1024, code: message.Continue, block1: opt(0, true, 6)},
				// NUM 1 of 256 bytes is offset 256, but 1024 bytes were received.
				{num: 1, more: false, szx: 4, from: 1024, to: 1100, code: message.RequestEntityIncomplete},
			},
		},
		{
			name: "too large by accumulation gives 4.13 with Size1",
			opts: AssemblerOptions{MaxBodySize: 2000},
			steps: []step{
				{num: 0, more: true, szx: 6, from: 0, to: 1024, code: message.Continue, block1: opt(0, true, 6)},
				{num: 1, more: true, szx: 6, from: 1024, to: 2048, code: message.RequestEntityTooLarge, size1Out: 2000},
				{num: 2, more: false, szx: 6, from: 2048, to: 3000, code: message.RequestEntityIncomplete},
			},
		},
		{
			name: "too large by announced Size1",
			opts: AssemblerOptions{MaxBodySize: 2000},
			steps: []step{
				{num: 0, more: true, szx: 6, from: 0, to: 1024, size1: 3000, code: message.RequestEntityTooLarge, size1Out: 2000},
			},
		},
		{
			name: "single block over a small limit gives 4.13",
			opts: AssemblerOptions{MaxBodySize: 100},
			steps: []step{
				{num: 0, more: false, szx: 3, from: 0, to: 101, code: message.RequestEntityTooLarge, size1Out: 100},
			},
		},
		{
			name: "short block with M set gives 4.00",
			steps: []step{
				{num: 0, more: true, szx: 6, from: 0, to: 1000, code: message.BadRequest},
			},
		},
		{
			name: "oversized last block gives 4.00",
			steps: []step{
				{num: 0, more: false, szx: 0, from: 0, to: 17, code: message.BadRequest},
			},
		},
		{
			name: "reserved szx gives 4.02",
			steps: []step{
				{num: 0, more: true, szx: 7, from: 0, to: 16, code: message.BadOption},
			},
		},
		{
			name: "restart with block 0 replaces the transfer",
			steps: []step{
				{num: 0, more: true, szx: 6, from: 0, to: 1024, code: message.Continue, block1: opt(0, true, 6)},
				{num: 0, more: true, szx: 4, from: 0, to: 256, code: message.Continue, block1: opt(0, true, 4)},
				{num: 1, more: false, szx: 4, from: 256, to: 300, block1: opt(1, false, 4)},
			},
			body: b[:300],
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := newAssembler(t, tt.opts)
			d := runSteps(t, a, b, tt.steps)
			if tt.body != nil && !bytes.Equal(d.Body, tt.body) {
				t.Fatalf("body is %d bytes, want %d bytes equal to the input", len(d.Body), len(tt.body))
			}
			if st := a.Stats(); st.Active != 0 || st.Buffered != 0 {
				t.Fatalf("state left behind: %+v", st)
			}
		})
	}
}

func TestAssemblerErrorsWrapSentinels(t *testing.T) {
	a, _ := newAssembler(t, AssemblerOptions{MaxBodySize: 100})
	b := body(200)
	d := a.Receive(key, Request{Block: Option{Num: 3, SZX: 0}, Payload: b[:16]})
	if !errors.Is(d.Err, ErrUnexpectedBlock) {
		t.Errorf("4.08 err = %v", d.Err)
	}
	d = a.Receive(key, Request{Block: Option{More: true, SZX: 6}, Payload: b[:10]})
	if !errors.Is(d.Err, ErrBlockSize) {
		t.Errorf("4.00 err = %v", d.Err)
	}
	d = a.Receive(key, Request{Block: Option{More: true, SZX: 0}, Payload: b[:16], Size1: 101})
	if !errors.Is(d.Err, ErrTooLarge) {
		t.Errorf("4.13 err = %v", d.Err)
	}
}

func TestAssemblerExpiry(t *testing.T) {
	a, clk := newAssembler(t, AssemblerOptions{Lifetime: time.Minute})
	b := body(4096)
	other := Key{Peer: "[::1]:40000", Path: "/upload"}

	start := func(k Key) {
		d := a.Receive(k, Request{Block: Option{More: true, SZX: 6}, Payload: b[:1024]})
		if d.Code != message.Continue {
			t.Fatalf("start %v: %v %v", k, d.Code, d.Err)
		}
	}
	start(key)
	clk.Advance(40 * time.Second)
	start(other)
	if st := a.Stats(); st.Active != 2 || st.Buffered != 2048 {
		t.Fatalf("stats %+v", st)
	}

	// 61 s after the first transfer's last block, only it has expired.
	clk.Advance(21 * time.Second)
	if n := a.Sweep(); n != 1 {
		t.Fatalf("Sweep dropped %d, want 1", n)
	}
	d := a.Receive(key, Request{Block: Option{Num: 1, SZX: 6}, Payload: b[1024:1100]})
	if d.Code != message.RequestEntityIncomplete {
		t.Fatalf("abandoned transfer continued: %v", d.Code)
	}
	// Activity keeps the other transfer alive.
	d = a.Receive(other, Request{Block: Option{Num: 1, More: true, SZX: 6}, Payload: b[1024:2048]})
	if d.Code != message.Continue {
		t.Fatalf("live transfer: %v %v", d.Code, d.Err)
	}
	clk.Advance(59 * time.Second)
	if n := a.Sweep(); n != 0 {
		t.Fatalf("Sweep dropped %d live transfers", n)
	}
	clk.Advance(2 * time.Second)
	if n := a.Sweep(); n != 1 {
		t.Fatalf("Sweep dropped %d, want 1", n)
	}
	st := a.Stats()
	if st.Expired != 2 || st.Active != 0 || st.Buffered != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAssemblerLimits(t *testing.T) {
	b := body(1024)
	t.Run("max transfers", func(t *testing.T) {
		a, clk := newAssembler(t, AssemblerOptions{MaxTransfers: 2, Lifetime: time.Minute})
		for i, want := range []message.Code{message.Continue, message.Continue, message.ServiceUnavailable} {
			k := Key{Peer: "p", Path: "/x", Tag: string(rune('a' + i))}
			if d := a.Receive(k, Request{Block: Option{More: true, SZX: 0}, Payload: b[:16]}); d.Code != want {
				t.Fatalf("transfer %d: %v, want %v", i, d.Code, want)
			}
		}
		// After expiry there is room again.
		clk.Advance(2 * time.Minute)
		k := Key{Peer: "p", Path: "/x", Tag: "z"}
		if d := a.Receive(k, Request{Block: Option{More: true, SZX: 0}, Payload: b[:16]}); d.Code != message.Continue {
			t.Fatalf("after expiry: %v", d.Code)
		}
		if st := a.Stats(); st.Rejected != 1 || st.Expired != 2 || st.Active != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("max buffered bytes", func(t *testing.T) {
		a, _ := newAssembler(t, AssemblerOptions{MaxBufferedBytes: 100})
		k1 := Key{Peer: "p1", Path: "/x"}
		k2 := Key{Peer: "p2", Path: "/x"}
		if d := a.Receive(k1, Request{Block: Option{More: true, SZX: 2}, Payload: b[:64]}); d.Code != message.Continue {
			t.Fatalf("first: %v", d.Code)
		}
		if d := a.Receive(k2, Request{Block: Option{More: true, SZX: 2}, Payload: b[:64]}); d.Code != message.ServiceUnavailable {
			t.Fatalf("second: %v", d.Code)
		}
		if st := a.Stats(); st.Buffered != 64 || st.Active != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("bad block size option", func(t *testing.T) {
		if _, err := NewAssembler(AssemblerOptions{BlockSize: 100}); !errors.Is(err, ErrBadSize) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestAssemblerSeparateKeys(t *testing.T) {
	a, _ := newAssembler(t, AssemblerOptions{})
	b1, b2 := body(100), bytes.Repeat([]byte{0xaa}, 100)
	k1 := Key{Peer: "p", Path: "/x", Tag: "1"}
	k2 := Key{Peer: "p", Path: "/x", Tag: "2"}
	for _, k := range []Key{k1, k2} {
		src := b1
		if k == k2 {
			src = b2
		}
		if d := a.Receive(k, Request{Block: Option{More: true, SZX: 1}, Payload: src[:32]}); d.Code != message.Continue {
			t.Fatal(d.Code)
		}
	}
	d2 := a.Receive(k2, Request{Block: Option{Num: 1, SZX: 1}, Payload: b2[32:50]})
	d1 := a.Receive(k1, Request{Block: Option{Num: 1, SZX: 1}, Payload: b1[32:40]})
	if !bytes.Equal(d1.Body, b1[:40]) || !bytes.Equal(d2.Body, b2[:50]) {
		t.Fatalf("bodies mixed up: %x / %x", d1.Body, d2.Body)
	}
}

// TestAssemblerRepeatedLastBlock: a block sent again at the offset of the
// last one is a repeat only when its bytes are the same; it may then end
// the body there (More cleared). Different bytes at that offset are blocks
// out of order (RFC 7959 §2.9.2), never a body mixing old and new bytes.
func TestAssemblerRepeatedLastBlock(t *testing.T) {
	src := body(2048)
	first := []step{
		{num: 0, more: true, szx: 6, from: 0, to: 1024, code: message.Continue, block1: opt(0, true, 6)},
		{num: 2, more: true, szx: 5, from: 1024, to: 1536, code: message.Continue, block1: opt(2, true, 5)},
	}
	t.Run("same bytes end the body", func(t *testing.T) {
		a, _ := newAssembler(t, AssemblerOptions{})
		d := runSteps(t, a, src, append(first[:2:2],
			step{num: 2, more: false, szx: 5, from: 1024, to: 1536, block1: opt(2, false, 5)}))
		if !bytes.Equal(d.Body, src[:1536]) {
			t.Fatalf("body %d bytes, want the first 1536", len(d.Body))
		}
	})
	t.Run("other bytes are out of order", func(t *testing.T) {
		a, _ := newAssembler(t, AssemblerOptions{})
		runSteps(t, a, src, append(first[:2:2],
			step{num: 2, more: false, szx: 5, from: 1536, to: 2048, code: message.RequestEntityIncomplete}))
		if st := a.Stats(); st.Active != 0 || st.Buffered != 0 {
			t.Fatalf("transfer kept: %+v", st)
		}
	})
}
