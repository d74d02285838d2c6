package block

import (
	"bytes"
	"errors"
	"testing"
)

func TestOptionCodec(t *testing.T) {
	tests := []struct {
		name  string
		opt   Option
		value uint32
		wire  []byte
		str   string
	}{
		{"zero", Option{}, 0, []byte{}, "0/0/16"},
		{"first of 1024 more", Option{Num: 0, More: true, SZX: 6}, 0x0e, []byte{0x0e}, "0/1/1024"},
		// 0x1a = NUM 1 | M 1 | SZX 2
		{"num1 m1 szx2", Option{Num: 1, More: true, SZX: 2}, 0x1a, []byte{0x1a}, "1/1/64"},
		{"largest 1 byte", Option{Num: 15, More: false, SZX: 6}, 0xf6, []byte{0xf6}, "15/0/1024"},
		// NUM 16 needs two bytes: 0x01 0x06
		{"two bytes", Option{Num: 16, SZX: 6}, 0x106, []byte{0x01, 0x06}, "16/0/1024"},
		{"max two bytes", Option{Num: 4095, More: true, SZX: 0}, 0xfff8, []byte{0xff, 0xf8}, "4095/1/16"},
		{"three bytes", Option{Num: 4096, SZX: 1}, 0x10001, []byte{0x01, 0x00, 0x01}, "4096/0/32"},
		{"max num", Option{Num: MaxNum, More: true, SZX: 6}, 0xfffffe, []byte{0xff, 0xff, 0xfe}, "1048575/1/1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := tt.opt.Value()
			if err != nil || v != tt.value {
				t.Fatalf("Value() = %#x, %v; want %#x", v, err, tt.value)
			}
			b, err := tt.opt.Bytes()
			if err != nil || !bytes.Equal(b, tt.wire) {
				t.Fatalf("Bytes() = % x, %v; want % x", b, err, tt.wire)
			}
			got, err := Parse(tt.value)
			if err != nil || got != tt.opt {
				t.Fatalf("Parse(%#x) = %+v, %v; want %+v", tt.value, got, err, tt.opt)
			}
			got, err = ParseBytes(tt.wire)
			if err != nil || got != tt.opt {
				t.Fatalf("ParseBytes(% x) = %+v, %v", tt.wire, got, err)
			}
			if s := tt.opt.String(); s != tt.str {
				t.Fatalf("String() = %q, want %q", s, tt.str)
			}
		})
	}
}

func TestOptionErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		run  func() error
	}{
		{"parse szx 7", ErrReservedSZX, func() error { _, err := Parse(0x17); return err }},
		{"parse bytes szx 7", ErrReservedSZX, func() error { _, err := ParseBytes([]byte{0x0f}); return err }},
		{"parse over 3 bytes", ErrNumRange, func() error { _, err := Parse(1 << 24); return err }},
		{"bytes too long", ErrOptionLength, func() error { _, err := ParseBytes([]byte{0, 0, 0, 1}); return err }},
		{"value szx 7", ErrReservedSZX, func() error { _, err := Option{SZX: 7}.Value(); return err }},
		{"value szx 9", ErrBadSize, func() error { _, err := Option{SZX: 9}.Value(); return err }},
		{"value num too big", ErrNumRange, func() error { _, err := Option{Num: MaxNum + 1}.Value(); return err }},
		{"size 0", ErrBadSize, func() error { _, err := SZXForSize(0); return err }},
		{"size 8", ErrBadSize, func() error { _, err := SZXForSize(8); return err }},
		{"size 100", ErrBadSize, func() error { _, err := SZXForSize(100); return err }},
		{"size 2048", ErrBadSize, func() error { _, err := SZXForSize(2048); return err }},
		{"szx 7 size", ErrReservedSZX, func() error { _, err := SizeForSZX(7); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(); !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestSizes(t *testing.T) {
	for szx, size := range []int{16, 32, 64, 128, 256, 512, 1024} {
		got, err := SZXForSize(size)
		if err != nil || int(got) != szx {
			t.Errorf("SZXForSize(%d) = %d, %v", size, got, err)
		}
		s, err := SizeForSZX(uint8(szx))
		if err != nil || s != size {
			t.Errorf("SizeForSZX(%d) = %d, %v", szx, s, err)
		}
		o := Option{Num: 3, SZX: uint8(szx)}
		if o.Size() != size || o.Offset() != 3*size {
			t.Errorf("%+v: Size %d Offset %d", o, o.Size(), o.Offset())
		}
	}
}
