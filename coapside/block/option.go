package block

import (
	"fmt"
	"strconv"
)

// Block option value layout (RFC 7959 §2.2). The option is a uint of 0-3
// bytes; the low 4 bits of the last byte hold M and SZX, NUM takes the rest:
//
//	 0 1 2 3 4 5 6 7
//	+-+-+-+-+-+-+-+-+
//	|  NUM  |M| SZX |          1 byte:  NUM < 2^4
//	+-+-+-+-+-+-+-+-+
//	|          NUM          |M| SZX |  2 bytes: NUM < 2^12
//	|                  NUM                  |M| SZX |  3 bytes: NUM < 2^20
const (
	// MaxNum is the largest block number a 3-byte option can carry.
	MaxNum = 1<<20 - 1
	// MaxSZX is the largest usable SZX (1024-byte blocks); 7 is reserved.
	MaxSZX = 6
	// MinSize and MaxSize bound the block size.
	MinSize = 16
	MaxSize = 1024
	// maxValue is the largest option value that fits in 3 bytes.
	maxValue = 1<<24 - 1
)

// Option is a decoded Block1 or Block2 option value.
type Option struct {
	// Num is the block number, 0..MaxNum.
	Num uint32
	// More is the M bit: more blocks follow (descriptive use) or the
	// transfer is not finished (control use, RFC 7959 §2.3).
	More bool
	// SZX encodes the block size as 2^(SZX+4), 0..MaxSZX.
	SZX uint8
}

// Size returns the block size in bytes, 2^(SZX+4).
func (o Option) Size() int { return 1 << (o.SZX + 4) }

// Offset returns the byte offset of the block in the body, Num*Size.
func (o Option) Offset() int { return int(o.Num) << (o.SZX + 4) }

// Valid checks Num and SZX against their ranges.
func (o Option) Valid() error {
	if o.SZX > MaxSZX {
		if o.SZX == 7 {
			return ErrReservedSZX
		}
		return fmt.Errorf("%w: SZX %d", ErrBadSize, o.SZX)
	}
	if o.Num > MaxNum {
		return fmt.Errorf("%w: NUM %d", ErrNumRange, o.Num)
	}
	return nil
}

// Value encodes o as the option's uint value.
func (o Option) Value() (uint32, error) {
	if err := o.Valid(); err != nil {
		return 0, err
	}
	v := o.Num<<4 | uint32(o.SZX)
	if o.More {
		v |= 1 << 3
	}
	return v, nil
}

// Bytes encodes o as the option's minimal-length bytes (RFC 7252 §3.2: a
// zero value is the empty string).
func (o Option) Bytes() ([]byte, error) {
	v, err := o.Value()
	if err != nil {
		return nil, err
	}
	return uintBytes(v), nil
}

// String renders o as NUM/M/SIZE, the notation of RFC 7959 figures.
func (o Option) String() string {
	m := "0"
	if o.More {
		m = "1"
	}
	return strconv.FormatUint(uint64(o.Num), 10) + "/" + m + "/" + strconv.Itoa(o.Size())
}

// Parse decodes an option uint value. SZX 7 returns ErrReservedSZX; a value
// over 3 bytes returns ErrNumRange.
func Parse(v uint32) (Option, error) {
	if v > maxValue {
		return Option{}, fmt.Errorf("%w: value %#x exceeds 3 bytes", ErrNumRange, v)
	}
	o := Option{Num: v >> 4, More: v&(1<<3) != 0, SZX: uint8(v & 7)}
	if o.SZX == 7 {
		// RFC 7959 §2.2: SZX 7 is reserved.
		return Option{}, ErrReservedSZX
	}
	return o, nil
}

// ParseBytes decodes the option value as it appears on the wire, 0 to 3
// bytes, big-endian.
func ParseBytes(b []byte) (Option, error) {
	if len(b) > 3 {
		return Option{}, fmt.Errorf("%w: %d bytes", ErrOptionLength, len(b))
	}
	var v uint32
	for _, c := range b {
		v = v<<8 | uint32(c)
	}
	return Parse(v)
}

// SZXForSize returns the SZX of a block size, which must be a power of two
// in MinSize..MaxSize.
func SZXForSize(size int) (uint8, error) {
	for szx := uint8(0); szx <= MaxSZX; szx++ {
		if 1<<(szx+4) == size {
			return szx, nil
		}
	}
	return 0, fmt.Errorf("%w: %d", ErrBadSize, size)
}

// SizeForSZX returns the block size of szx, or an error for szx > MaxSZX.
func SizeForSZX(szx uint8) (int, error) {
	if err := (Option{SZX: szx}).Valid(); err != nil {
		return 0, err
	}
	return 1 << (szx + 4), nil
}

// uintBytes encodes v in the minimal number of big-endian bytes.
func uintBytes(v uint32) []byte {
	switch {
	case v == 0:
		return []byte{}
	case v < 1<<8:
		return []byte{byte(v)}
	case v < 1<<16:
		return []byte{byte(v >> 8), byte(v)}
	case v < 1<<24:
		return []byte{byte(v >> 16), byte(v >> 8), byte(v)}
	default:
		return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	}
}
