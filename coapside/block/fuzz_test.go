package block

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// FuzzParseBytes checks the option codec: no panics, and every accepted
// value re-encodes to the same minimal bytes.
func FuzzParseBytes(f *testing.F) {
	for _, b := range [][]byte{{}, {0x0e}, {0x0f}, {0x01, 0x06}, {0xff, 0xff, 0xfe}, {0, 0, 0, 1}, {0x00, 0x1a}} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseBytes(b)
		if err != nil {
			if !errors.Is(err, ErrReservedSZX) && !errors.Is(err, ErrOptionLength) && !errors.Is(err, ErrNumRange) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		enc, err := o.Bytes()
		if err != nil {
			t.Fatalf("Bytes of parsed %+v: %v", o, err)
		}
		// Leading zero bytes are not minimal; compare the numeric value.
		trimmed := bytes.TrimLeft(b, "\x00")
		if !bytes.Equal(enc, trimmed) {
			t.Fatalf("% x -> %+v -> % x", b, o, enc)
		}
	})
}

// FuzzAssembler feeds random block sequences to an Assembler and checks
// its invariants: answers come from the allowed set, state accounting stays
// consistent, and every completed body is exactly the bytes sent in order
// since the last block 0.
func FuzzAssembler(f *testing.F) {
	f.Add([]byte{0x0e, 0x00, 0x16, 0x00, 0x20, 0x40})
	f.Add([]byte{0x0e, 0x01, 0x4c, 0x02, 0x40, 0x10})
	f.Add([]byte{0x1e, 0x00, 0x0e, 0xff, 0x0e, 0x00})
	f.Fuzz(func(t *testing.T, seq []byte) {
		clk := &fakeClock{t: time.Unix(0, 0)}
		a, err := NewAssembler(AssemblerOptions{
			MaxBodySize: 3000, MaxTransfers: 2, MaxBufferedBytes: 5000,
			BlockSize: 256, Lifetime: 10 * time.Second, Now: clk.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		keys := []Key{{Peer: "a"}, {Peer: "b"}, {Peer: "c"}}
		sent := make(map[Key][]byte) // bytes accepted since the last block 0
		src := body(1024)
		for len(seq) >= 3 {
			// Each step: option byte (NUM<<4|M|SZX), key/length byte, time byte.
			v, kl, tb := seq[0], seq[1], seq[2]
			seq = seq[3:]
			blk, err := Parse(uint32(v))
			if err != nil {
				continue
			}
			k := keys[int(kl)%len(keys)]
			n := blk.Size()
			if kl&0x80 != 0 {
				n = int(kl>>2) % (blk.Size() + 1) // sometimes a wrong length
			}
			clk.Advance(time.Duration(tb) * 100 * time.Millisecond)
			payload := src[:n]
			d := a.Receive(k, Request{Block: blk, Payload: payload})
			switch {
			case d.Complete:
				want := append(append([]byte(nil), sent[k]...), payload...)
				switch {
				case blk.Num == 0:
					want = payload
				case blk.Offset() != len(sent[k]) && blk.Offset()+n == len(sent[k]):
					want = sent[k] // the last block again, now without More
				}
				if !bytes.Equal(d.Body, want) {
					t.Fatalf("body %d bytes, want %d", len(d.Body), len(want))
				}
				if len(d.Body) > 3000 {
					t.Fatalf("body over limit: %d", len(d.Body))
				}
				delete(sent, k)
			case d.Code == message.Continue:
				if blk.Num == 0 {
					sent[k] = append([]byte(nil), payload...)
				} else if len(sent[k]) == blk.Offset() {
					sent[k] = append(sent[k], payload...)
				}
				if !d.HasBlock1 || d.Block1.Num != blk.Num || d.Block1.SZX > blk.SZX {
					t.Fatalf("Continue with Block1 %v for %v", d.Block1, blk)
				}
			case d.Code == message.RequestEntityIncomplete, d.Code == message.RequestEntityTooLarge,
				d.Code == message.BadRequest, d.Code == message.ServiceUnavailable:
				if d.Err == nil {
					t.Fatalf("error code %v without Err", d.Code)
				}
				if d.Code == message.RequestEntityTooLarge && d.Size1 != 3000 {
					t.Fatalf("4.13 with Size1 %d", d.Size1)
				}
				delete(sent, k)
			default:
				t.Fatalf("unexpected answer %v %v", d.Code, d.Err)
			}
			st := a.Stats()
			if st.Active > 2 || st.Buffered > 5000 || st.Buffered < 0 {
				t.Fatalf("stats out of bounds: %+v", st)
			}
		}
		clk.Advance(time.Minute)
		a.Sweep()
		if st := a.Stats(); st.Active != 0 || st.Buffered != 0 {
			t.Fatalf("state left after expiry: %+v", st)
		}
	})
}

// FuzzSenderAssembler transfers bodies of random length while the server
// changes its preferred block size between blocks; the body must arrive
// intact.
func FuzzSenderAssembler(f *testing.F) {
	f.Add(uint16(5000), []byte{6, 4, 2, 0})
	f.Add(uint16(1), []byte{0})
	f.Add(uint16(1024), []byte{6, 6, 6})
	f.Fuzz(func(t *testing.T, n uint16, sizes []byte) {
		b := body(int(n)%8192 + 1)
		s, err := NewSender(b, 1024)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := NewAssembler(AssemblerOptions{MaxBodySize: 8192})
		for i := 0; i < 1000; i++ {
			o, p := s.Current()
			d := a.Receive(key, Request{Block: o, Payload: p})
			if d.Complete {
				if !bytes.Equal(d.Body, b) {
					t.Fatalf("body %d bytes, want %d", len(d.Body), len(b))
				}
				return
			}
			if d.Code != message.Continue {
				t.Fatalf("block %s: %v %v", o, d.Code, d.Err)
			}
			// The server's answer may ask for any smaller size.
			resp := d.Block1
			if len(sizes) > 0 {
				resp.SZX = min(resp.SZX, sizes[0]%7)
				sizes = sizes[1:]
			}
			if err := s.Continue(resp); err != nil {
				t.Fatal(err)
			}
		}
		t.Fatal("transfer did not finish")
	})
}
