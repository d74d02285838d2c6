package block

import (
	"strconv"
	"testing"
)

// BenchmarkAssembler measures a 16 KiB Block1 transfer in 1 KiB blocks.
func BenchmarkAssembler(b *testing.B) {
	a, err := NewAssembler(AssemblerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	src := body(16 << 10)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := Key{Peer: "p", Path: "/x", Tag: strconv.Itoa(i & 63)}
		i++
		for num := 0; num < 16; num++ {
			d := a.Receive(k, Request{Block: Option{Num: uint32(num), More: num < 15, SZX: 6},
				Payload: src[num<<10 : (num+1)<<10]})
			if num == 15 && !d.Complete {
				b.Fatal(d.Code, d.Err)
			}
		}
	}
}

func BenchmarkSliceBody(b *testing.B) {
	src := body(16 << 10)
	b.ReportAllocs()
	for b.Loop() {
		for num := uint32(0); num < 16; num++ {
			if _, err := SliceBody(src, Option{Num: num, SZX: 6}, true, 6); err != nil {
				b.Fatal(err)
			}
		}
	}
}
