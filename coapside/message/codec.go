package message

import (
	"fmt"
	"slices"
)

// Header layout (RFC 7252 §3):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Ver| T |  TKL  |      Code     |          Message ID           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|   Token (if any, TKL bytes) ...
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|   Options (if any) ...
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|1 1 1 1 1 1 1 1|    Payload (if any) ...
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Option layout (RFC 7252 §3.1):
//
//	  0   1   2   3   4   5   6   7
//	+---------------+---------------+
//	| Option Delta  | Option Length |   1 byte
//	+---------------+---------------+
//	| Option Delta extended (0-2 B) |   nibble 13: +13, 14: +269, 15: reserved
//	+-------------------------------+
//	| Option Length extended (0-2 B)|
//	+-------------------------------+
//	| Option Value (0 or more B)    |
//	+-------------------------------+
const (
	version       = 1
	payloadMarker = 0xff
	headerLen     = 4
	maxOptionID   = 0xffff
	maxOptionLen  = 0xffff + 269
)

func malformed(err error, format string, args ...any) error {
	return fmt.Errorf("%w: %w: "+format, append([]any{ErrMalformed, err}, args...)...)
}

// Header holds the fixed 4-byte header fields.
type Header struct {
	Type      Type
	TokenLen  int
	Code      Code
	MessageID uint16
}

// ParseHeader decodes only the fixed header, so a receiver can answer a
// message whose remainder is malformed (RFC 7252 §4.2: reject with RST).
func ParseHeader(data []byte) (Header, error) {
	if len(data) < headerLen {
		return Header{}, malformed(ErrTruncatedHeader, "%d bytes", len(data))
	}
	h := Header{
		Type:      Type(data[0] >> 4 & 0x3),
		TokenLen:  int(data[0] & 0xf),
		Code:      Code(data[1]),
		MessageID: uint16(data[2])<<8 | uint16(data[3]),
	}
	if data[0]>>6 != version {
		return h, malformed(ErrVersion, "version %d", data[0]>>6)
	}
	return h, nil
}

// Unmarshal decodes data into m, reusing m's option storage. Token, option
// values and Payload alias data. On error, the header fields decoded so far
// are left in m. A typical message decodes without allocating.
func (m *Message) Unmarshal(data []byte) error {
	h, err := ParseHeader(data)
	m.Type, m.Code, m.MessageID = h.Type, h.Code, h.MessageID
	m.Token, m.Payload = nil, nil
	if m.Options == nil {
		m.Options = m.store[:0]
	} else {
		clear(m.Options)
		m.Options = m.Options[:0]
	}
	if err != nil {
		return err
	}
	// RFC 7252 §3: lengths 9-15 are reserved and MUST be processed as a
	// message format error.
	if h.TokenLen > MaxTokenLength {
		return malformed(ErrTokenLength, "TKL %d", h.TokenLen)
	}
	pos := headerLen
	if len(data) < pos+h.TokenLen {
		return malformed(ErrTruncated, "token of %d bytes past end", h.TokenLen)
	}
	if h.TokenLen > 0 {
		m.Token = data[pos : pos+h.TokenLen : pos+h.TokenLen]
	}
	pos += h.TokenLen
	var id int
	for pos < len(data) {
		b := data[pos]
		pos++
		if b == payloadMarker {
			// RFC 7252 §3: a marker followed by a zero-length payload MUST be
			// processed as a message format error.
			if pos == len(data) {
				return malformed(ErrEmptyPayload, "at offset %d", pos-1)
			}
			m.Payload = data[pos:len(data):len(data)]
			break
		}
		delta, n, err := optionExt(data, pos, int(b>>4))
		if err != nil {
			return malformed(err, "option delta at offset %d", pos-1)
		}
		pos += n
		length, n, err := optionExt(data, pos, int(b&0xf))
		if err != nil {
			return malformed(err, "option length at offset %d", pos-1)
		}
		pos += n
		id += delta
		if id > maxOptionID {
			return malformed(ErrOptionNumber, "option %d", id)
		}
		if len(data)-pos < length {
			return malformed(ErrTruncated, "option %d value of %d bytes past end", id, length)
		}
		m.Options = append(m.Options, Option{ID: OptionID(id), Value: data[pos : pos+length : pos+length]})
		pos += length
	}
	// RFC 7252 §4.1: an Empty message has no token, options or payload.
	if m.Code == Empty && len(data) > headerLen {
		return malformed(ErrEmptyMessage, "%d extra bytes", len(data)-headerLen)
	}
	return nil
}

// optionExt resolves a delta or length nibble with its extended bytes at pos
// and returns the value and the number of extended bytes consumed.
func optionExt(data []byte, pos, nibble int) (val, n int, err error) {
	switch nibble {
	case 13:
		if pos >= len(data) {
			return 0, 0, ErrTruncated
		}
		return int(data[pos]) + 13, 1, nil
	case 14:
		if pos+1 >= len(data) {
			return 0, 0, ErrTruncated
		}
		return int(data[pos])<<8 | int(data[pos+1]) + 269, 2, nil
	case 15:
		// RFC 7252 §3.1: 15 is reserved for the payload marker; as a length
		// or with a non-marker byte it is a message format error.
		return 0, 0, ErrOptionNibble
	}
	return nibble, 0, nil
}

// Decode parses data into a new Message whose slices alias data.
func Decode(data []byte) (*Message, error) {
	m := new(Message)
	if err := m.Unmarshal(data); err != nil {
		return nil, err
	}
	return m, nil
}

// Size returns the encoded length of m.
func (m *Message) Size() int {
	n := headerLen + len(m.Token)
	prev := 0
	for _, o := range m.Options {
		d := int(o.ID) - prev
		if d < 0 {
			d = 0 // unsorted input is sorted at encode time; estimate only
		}
		prev = int(o.ID)
		n += 1 + extLen(d) + extLen(len(o.Value)) + len(o.Value)
	}
	if len(m.Payload) > 0 {
		n += 1 + len(m.Payload)
	}
	return n
}

func extLen(v int) int {
	switch {
	case v < 13:
		return 0
	case v < 269:
		return 1
	}
	return 2
}

// MarshalBinary encodes m (encoding.BinaryMarshaler).
func (m *Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, m.Size()))
}

// AppendBinary appends the encoding of m to dst (encoding.BinaryAppender).
// Options are written in number order; repeated options keep their order.
func (m *Message) AppendBinary(dst []byte) ([]byte, error) {
	if len(m.Token) > MaxTokenLength {
		return dst, fmt.Errorf("%w: %d bytes", ErrTokenLength, len(m.Token))
	}
	if m.Type > Reset {
		return dst, fmt.Errorf("%w: %d", ErrInvalidType, m.Type)
	}
	if m.Code == Empty && (len(m.Token) > 0 || len(m.Options) > 0 || len(m.Payload) > 0) {
		return dst, ErrEmptyMessage
	}
	dst = append(dst, version<<6|byte(m.Type)<<4|byte(len(m.Token)), byte(m.Code),
		byte(m.MessageID>>8), byte(m.MessageID))
	dst = append(dst, m.Token...)
	opts := m.Options
	if !opts.sorted() {
		opts = slices.Clone(opts)
		slices.SortStableFunc(opts, func(a, b Option) int { return int(a.ID) - int(b.ID) })
	}
	prev := 0
	for _, o := range opts {
		if len(o.Value) > maxOptionLen {
			return dst, fmt.Errorf("%w: option %v has %d bytes", ErrOptionTooLong, o.ID, len(o.Value))
		}
		d := int(o.ID) - prev
		prev = int(o.ID)
		dn, dx := nibble(d)
		ln, lx := nibble(len(o.Value))
		dst = append(dst, byte(dn<<4|ln))
		dst = appendExt(dst, dn, dx)
		dst = appendExt(dst, ln, lx)
		dst = append(dst, o.Value...)
	}
	if len(m.Payload) > 0 {
		dst = append(dst, payloadMarker)
		dst = append(dst, m.Payload...)
	}
	return dst, nil
}

func nibble(v int) (nib, ext int) {
	switch {
	case v < 13:
		return v, 0
	case v < 269:
		return 13, v - 13
	}
	return 14, v - 269
}

func appendExt(dst []byte, nib, ext int) []byte {
	switch nib {
	case 13:
		return append(dst, byte(ext))
	case 14:
		return append(dst, byte(ext>>8), byte(ext))
	}
	return dst
}
