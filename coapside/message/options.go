package message

import (
	"strings"
)

// Options is a list of options kept in ascending option-number order; repeated
// options keep their relative order (RFC 7252 §5.4.5). Values may alias a
// decoded buffer.
type Options []Option

// insertIndex returns the index after the last option with number <= id.
func (o Options) insertIndex(id OptionID) int {
	i := len(o)
	for i > 0 && o[i-1].ID > id {
		i--
	}
	return i
}

// Add appends an occurrence of the option after any existing ones with the same
// number, keeping the list sorted.
func (o Options) Add(id OptionID, value []byte) Options {
	i := o.insertIndex(id)
	o = append(o, Option{})
	copy(o[i+1:], o[i:])
	o[i] = Option{ID: id, Value: value}
	return o
}

// Set replaces every occurrence of the option with a single value.
func (o Options) Set(id OptionID, value []byte) Options {
	return o.Del(id).Add(id, value)
}

// Del removes every occurrence of the option.
func (o Options) Del(id OptionID) Options {
	j := 0
	for _, op := range o {
		if op.ID != id {
			o[j] = op
			j++
		}
	}
	clear(o[j:])
	return o[:j]
}

// Has reports whether the option is present.
func (o Options) Has(id OptionID) bool {
	for _, op := range o {
		if op.ID == id {
			return true
		}
	}
	return false
}

// Get returns the first value of the option.
func (o Options) Get(id OptionID) ([]byte, bool) {
	for _, op := range o {
		if op.ID == id {
			return op.Value, true
		}
	}
	return nil, false
}

// All returns every value of a repeatable option, in order.
func (o Options) All(id OptionID) [][]byte {
	var out [][]byte
	for _, op := range o {
		if op.ID == id {
			out = append(out, op.Value)
		}
	}
	return out
}

// Strings returns every value of the option as strings, in order.
func (o Options) Strings(id OptionID) []string {
	var out []string
	for _, op := range o {
		if op.ID == id {
			out = append(out, string(op.Value))
		}
	}
	return out
}

// Uint returns the first value of a uint-format option.
func (o Options) Uint(id OptionID) (uint32, error) {
	v, ok := o.Get(id)
	if !ok {
		return 0, ErrOptionNotFound
	}
	return Option{ID: id, Value: v}.Uint()
}

// SetUint sets a uint-format option to v in minimal encoding.
func (o Options) SetUint(id OptionID, v uint32) Options {
	return o.Set(id, encodeUint(nil, v))
}

// String returns the first value of a string-format option.
func (o Options) String(id OptionID) (string, bool) {
	v, ok := o.Get(id)
	return string(v), ok
}

// SetString sets a single string value.
func (o Options) SetString(id OptionID, s string) Options { return o.Set(id, []byte(s)) }

// AddString appends a string occurrence.
func (o Options) AddString(id OptionID, s string) Options { return o.Add(id, []byte(s)) }

// Path returns the Uri-Path segments joined as "/a/b" ("/" when there are none).
func (o Options) Path() string { return joinPath(o, URIPath) }

// SetPath replaces Uri-Path with the segments of p split on "/" (leading slash
// optional; an empty path or "/" sets no segments, RFC 7252 §6.4 step 8).
func (o Options) SetPath(p string) Options {
	o = o.Del(URIPath)
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return o
	}
	for seg := range strings.SplitSeq(p, "/") {
		o = o.Add(URIPath, []byte(seg))
	}
	return o
}

// LocationPath returns the Location-Path segments joined as "/a/b".
func (o Options) LocationPath() string { return joinPath(o, LocationPath) }

// Queries returns the Uri-Query values.
func (o Options) Queries() []string { return o.Strings(URIQuery) }

// ContentFormat returns the Content-Format option.
func (o Options) ContentFormat() (MediaType, bool) {
	v, err := o.Uint(ContentFormat)
	return MediaType(v), err == nil && v <= 0xffff
}

// SetContentFormat sets the Content-Format option.
func (o Options) SetContentFormat(mt MediaType) Options {
	return o.SetUint(ContentFormat, uint32(mt))
}

// Accept returns the Accept option.
func (o Options) Accept() (MediaType, bool) {
	v, err := o.Uint(Accept)
	return MediaType(v), err == nil && v <= 0xffff
}

// MaxAge returns the Max-Age option in seconds; absent means 60 (RFC 7252 §5.10.5).
func (o Options) MaxAge() uint32 {
	v, err := o.Uint(MaxAge)
	if err != nil {
		return 60
	}
	return v
}

// Observe returns the Observe option value (RFC 7641 §2).
func (o Options) Observe() (uint32, bool) {
	v, err := o.Uint(Observe)
	return v, err == nil
}

// ETag returns the first ETag value.
func (o Options) ETag() ([]byte, bool) { return o.Get(ETag) }

// Clone deep-copies the options so they no longer alias a decode buffer.
func (o Options) Clone() Options {
	if o == nil {
		return nil
	}
	n := 0
	for _, op := range o {
		n += len(op.Value)
	}
	buf := make([]byte, 0, n)
	out := make(Options, len(o))
	for i, op := range o {
		start := len(buf)
		buf = append(buf, op.Value...)
		out[i] = Option{ID: op.ID, Value: buf[start:len(buf):len(buf)]}
	}
	return out
}

// sorted reports whether the options are in non-decreasing number order.
func (o Options) sorted() bool {
	for i := 1; i < len(o); i++ {
		if o[i].ID < o[i-1].ID {
			return false
		}
	}
	return true
}

func joinPath(o Options, id OptionID) string {
	var b strings.Builder
	for _, op := range o {
		if op.ID == id {
			b.WriteByte('/')
			b.Write(op.Value)
		}
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}
