package message

import "strconv"

// OptionID is a CoAP option number (RFC 7252 §5.4, §12.2).
type OptionID uint16

// Registered option numbers.
const (
	IfMatch       OptionID = 1   // RFC 7252 §5.10.8.1
	URIHost       OptionID = 3   // RFC 7252 §5.10.1
	ETag          OptionID = 4   // RFC 7252 §5.10.6
	IfNoneMatch   OptionID = 5   // RFC 7252 §5.10.8.2
	Observe       OptionID = 6   // RFC 7641 §2
	URIPort       OptionID = 7   // RFC 7252 §5.10.1
	LocationPath  OptionID = 8   // RFC 7252 §5.10.7
	URIPath       OptionID = 11  // RFC 7252 §5.10.1
	ContentFormat OptionID = 12  // RFC 7252 §5.10.3
	MaxAge        OptionID = 14  // RFC 7252 §5.10.5
	URIQuery      OptionID = 15  // RFC 7252 §5.10.1
	Accept        OptionID = 17  // RFC 7252 §5.10.4
	LocationQuery OptionID = 20  // RFC 7252 §5.10.7
	Block2        OptionID = 23  // RFC 7959 §2.1
	Block1        OptionID = 27  // RFC 7959 §2.1
	Size2         OptionID = 28  // RFC 7959 §4
	ProxyURI      OptionID = 35  // RFC 7252 §5.10.2
	ProxyScheme   OptionID = 39  // RFC 7252 §5.10.2
	Size1         OptionID = 60  // RFC 7252 §5.10.9
	Echo          OptionID = 252 // RFC 9175 §2.2
	NoResponse    OptionID = 258 // RFC 7967 §2
	RequestTag    OptionID = 292 // RFC 9175 §3.2
)

// Format is the value format of an option (RFC 7252 §3.2).
type Format uint8

// Option value formats.
const (
	FormatOpaque Format = iota // a sequence of bytes
	FormatEmpty                // zero-length
	FormatUint                 // non-negative integer in network byte order, minimal length
	FormatString               // UTF-8 text
)

// OptionDef describes a registered option.
type OptionDef struct {
	Name       string
	Format     Format
	MinLen     int
	MaxLen     int
	Repeatable bool
}

var optionDefs = map[OptionID]OptionDef{
	IfMatch:       {"If-Match", FormatOpaque, 0, 8, true},
	URIHost:       {"Uri-Host", FormatString, 1, 255, false},
	ETag:          {"ETag", FormatOpaque, 1, 8, true},
	IfNoneMatch:   {"If-None-Match", FormatEmpty, 0, 0, false},
	Observe:       {"Observe", FormatUint, 0, 3, false},
	URIPort:       {"Uri-Port", FormatUint, 0, 2, false},
	LocationPath:  {"Location-Path", FormatString, 0, 255, true},
	URIPath:       {"Uri-Path", FormatString, 0, 255, true},
	ContentFormat: {"Content-Format", FormatUint, 0, 2, false},
	MaxAge:        {"Max-Age", FormatUint, 0, 4, false},
	URIQuery:      {"Uri-Query", FormatString, 0, 255, true},
	Accept:        {"Accept", FormatUint, 0, 2, false},
	LocationQuery: {"Location-Query", FormatString, 0, 255, true},
	Block2:        {"Block2", FormatUint, 0, 3, false},
	Block1:        {"Block1", FormatUint, 0, 3, false},
	Size2:         {"Size2", FormatUint, 0, 4, false},
	ProxyURI:      {"Proxy-Uri", FormatString, 1, 1034, false},
	ProxyScheme:   {"Proxy-Scheme", FormatString, 1, 255, false},
	Size1:         {"Size1", FormatUint, 0, 4, false},
	Echo:          {"Echo", FormatOpaque, 1, 40, false},
	NoResponse:    {"No-Response", FormatUint, 0, 1, false},
	RequestTag:    {"Request-Tag", FormatOpaque, 0, 8, true},
}

// Def returns the registry entry of the option and whether it is known.
func (id OptionID) Def() (OptionDef, bool) {
	d, ok := optionDefs[id]
	return d, ok
}

// Known reports whether the option is in the registry.
func (id OptionID) Known() bool { _, ok := optionDefs[id]; return ok }

// Critical reports whether the option is critical (odd number, RFC 7252 §5.4.6).
//
//	  0   1   2   3   4   5   6   7
//	+---+---+---+---+---+---+---+---+
//	|           | NoCacheKey| U | C |
//	+---+---+---+---+---+---+---+---+
func (id OptionID) Critical() bool { return id&1 != 0 }

// Unsafe reports whether a proxy that does not know the option must not
// forward it (RFC 7252 §5.4.6).
func (id OptionID) Unsafe() bool { return id&2 != 0 }

// NoCacheKey reports whether the option is not part of the cache key
// (bits 3-5 all set, RFC 7252 §5.4.6). Only meaningful for safe-to-forward options.
func (id OptionID) NoCacheKey() bool { return id&0x1e == 0x1c }

// String returns the registered name or "Option(N)".
func (id OptionID) String() string {
	if d, ok := optionDefs[id]; ok {
		return d.Name
	}
	return "Option(" + strconv.Itoa(int(id)) + ")"
}

// Option is one option instance. Value aliases the decoded buffer.
type Option struct {
	ID    OptionID
	Value []byte
}

// Uint returns the value decoded as an unsigned integer (RFC 7252 §3.2).
// Values longer than 4 bytes are rejected.
func (o Option) Uint() (uint32, error) {
	if len(o.Value) > 4 {
		return 0, ErrOptionFormat
	}
	return decodeUint(o.Value), nil
}

// ValidLength reports whether the value length fits the registry's bounds;
// unknown options are always valid.
func (o Option) ValidLength() bool {
	d, ok := optionDefs[o.ID]
	if !ok {
		return true
	}
	return len(o.Value) >= d.MinLen && len(o.Value) <= d.MaxLen
}

func decodeUint(b []byte) uint32 {
	var v uint32
	for _, c := range b {
		v = v<<8 | uint32(c)
	}
	return v
}

// encodeUint appends v in the minimal number of bytes (zero is zero-length,
// RFC 7252 §3.2).
func encodeUint(dst []byte, v uint32) []byte {
	switch {
	case v == 0:
		return dst
	case v < 1<<8:
		return append(dst, byte(v))
	case v < 1<<16:
		return append(dst, byte(v>>8), byte(v))
	case v < 1<<24:
		return append(dst, byte(v>>16), byte(v>>8), byte(v))
	}
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// UintBytes returns the minimal encoding of v for an option of uint format.
func UintBytes(v uint32) []byte { return encodeUint(nil, v) }
