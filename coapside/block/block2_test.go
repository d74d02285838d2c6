package block

import (
	"bytes"
	"errors"
	"testing"
)

func body(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func TestSliceBody(t *testing.T) {
	b := body(2500)
	tests := []struct {
		name      string
		body      []byte
		req       Option
		hasReq    bool
		maxSZX    uint8
		blockwise bool
		block     Option
		from, to  int
	}{
		{"small whole", b[:100], Option{}, false, 6, false, Option{}, 0, 100},
		{"exactly one block", b[:1024], Option{}, false, 6, false, Option{}, 0, 1024},
		{"empty body", nil, Option{}, false, 6, false, Option{}, 0, 0},
		{"large first block", b, Option{}, false, 6, true, Option{Num: 0, More: true, SZX: 6}, 0, 1024},
		{"client asks block 1", b, Option{Num: 1, SZX: 6}, true, 6, true, Option{Num: 1, More: true, SZX: 6}, 1024, 2048},
		{"last block", b, Option{Num: 2, SZX: 6}, true, 6, true, Option{Num: 2, More: false, SZX: 6}, 2048, 2500},
		{"client smaller szx", b, Option{Num: 0, SZX: 2}, true, 6, true, Option{Num: 0, More: true, SZX: 2}, 0, 64},
		{"client small szx small body", b[:10], Option{Num: 0, SZX: 0}, true, 6, true, Option{Num: 0, More: false, SZX: 0}, 0, 10},
		{"server smaller szx maps offset", b, Option{Num: 1, SZX: 6}, true, 4, true, Option{Num: 4, More: true, SZX: 4}, 1024, 1280},
		{"server limit without request", b[:300], Option{}, false, 4, true, Option{Num: 0, More: true, SZX: 4}, 0, 256},
		{"request M bit ignored", b, Option{Num: 1, More: true, SZX: 6}, true, 6, true, Option{Num: 1, More: true, SZX: 6}, 1024, 2048},
		{"block 0 of empty body", nil, Option{SZX: 6}, true, 6, true, Option{Num: 0, SZX: 6}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := SliceBody(tt.body, tt.req, tt.hasReq, tt.maxSZX)
			if err != nil {
				t.Fatal(err)
			}
			if s.Blockwise != tt.blockwise || s.Block != tt.block {
				t.Fatalf("got blockwise=%v block=%s, want %v %s", s.Blockwise, s.Block, tt.blockwise, tt.block)
			}
			if !bytes.Equal(s.Payload, tt.body[tt.from:tt.to]) {
				t.Fatalf("payload is %d bytes, want body[%d:%d]", len(s.Payload), tt.from, tt.to)
			}
			if s.Size2 != uint32(len(tt.body)) {
				t.Fatalf("Size2 = %d", s.Size2)
			}
		})
	}
}

func TestSliceBodyErrors(t *testing.T) {
	b := body(2048)
	tests := []struct {
		name   string
		req    Option
		maxSZX uint8
		want   error
	}{
		{"past end", Option{Num: 2, SZX: 6}, 6, ErrOutOfRange},
		{"far past end", Option{Num: MaxNum, SZX: 0}, 6, ErrOutOfRange},
		{"reserved request szx", Option{SZX: 7}, 6, ErrReservedSZX},
		{"reserved server szx", Option{}, 7, ErrReservedSZX},
		{"num too large", Option{Num: MaxNum + 1}, 6, ErrNumRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := SliceBody(b, tt.req, true, tt.maxSZX); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}
