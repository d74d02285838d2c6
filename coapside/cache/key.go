package cache

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// Key identifies a cached response: method, target (scheme, device host/name,
// path, query) and every request option that is part of the cache key
// (RFC 7252 §5.4.6: options whose NoCacheKey bit is set are not; neither are
// Observe, Block1/Block2, Size1/Size2, ETag (validation, not key),
// Uri-Host/Uri-Port/Proxy-Uri/Proxy-Scheme (the target is given explicitly),
// No-Response). See InKey.
//
// A Key is an opaque byte string built by KeyOf:
//
//	+---------+---------------------------+--------+--------+-----------------+-----------+
//	| uvarint | target 0x00 path          | method | uvarint| options         | payload   |
//	| len(R)  | R: the resource           | 1 byte | count  | (id, len, value)| FETCH only|
//	+---------+---------------------------+--------+--------+-----------------+-----------+
//
// where path is the Uri-Path joined as "/a/b" ("/" when empty), id and len
// are uvarints, and the options are those for which InKey holds, in
// ascending number order, repeated ones in request order. The resource
// prefix lets the cache find every entry of a resource (Invalidate); the
// exact Uri-Path segments are among the options, so a segment holding "/"
// still gives a key of its own.
type Key string

// InKey reports whether a request option is part of the cache key
// (RFC 7252 §5.6, §5.4.6). Options with the NoCacheKey bit are not, nor are
// the options the cache or the bridge interprets itself: ETag (validation,
// §5.10.6), Observe (RFC 7641), Block1, Block2, Size1, Size2 (whole
// representations only, RFC 7959), Uri-Host, Uri-Port, Proxy-Uri,
// Proxy-Scheme (the target is given to KeyOf) and No-Response (RFC 7967).
// Every other option, known or not, is part of the key.
func InKey(id message.OptionID) bool {
	switch id {
	case message.ETag, message.Observe,
		message.Block1, message.Block2, message.Size1, message.Size2,
		message.URIHost, message.URIPort, message.ProxyURI, message.ProxyScheme,
		message.NoResponse:
		return false
	}
	return !id.NoCacheKey()
}

// KeyOf builds the key of a GET or FETCH to target with the request's
// options; for a FETCH the payload is part of the key, as is Content-Format
// like any other request option (RFC 8132 §2). target names the device
// canonically, scheme://device (e.g. "coap://sensor-1"), the same string the
// proxy later passes to Invalidate. Options need not be sorted: the key
// orders them by number, keeping the request order of repeated options, so
// two requests that differ only in the order of different options, or in
// options outside the key (ETag, Observe, Block2, ...), get the same key;
// the order of Uri-Path or Uri-Query values matters. opts is not modified.
func KeyOf(method message.Code, target string, opts message.Options, payload []byte) Key {
	if !sortedByID(opts) {
		opts = slices.Clone(opts)
		slices.SortStableFunc(opts, func(a, b message.Option) int { return int(a.ID) - int(b.ID) })
	}
	pathLen, count, optLen := 0, 0, 0
	for _, o := range opts {
		if o.ID == message.URIPath {
			pathLen += 1 + len(o.Value)
		}
		if InKey(o.ID) {
			count++
			optLen += uvarintLen(uint64(o.ID)) + uvarintLen(uint64(len(o.Value))) + len(o.Value)
		}
	}
	if pathLen == 0 {
		pathLen = 1 // "/"
	}
	if method != message.FETCH {
		payload = nil
	}
	resLen := len(target) + 1 + pathLen
	var b strings.Builder
	b.Grow(uvarintLen(uint64(resLen)) + resLen + 1 + uvarintLen(uint64(count)) + optLen + len(payload))
	writeUvarint(&b, uint64(resLen))
	b.WriteString(target)
	b.WriteByte(0)
	if !writePath(&b, opts) {
		b.WriteByte('/')
	}
	b.WriteByte(byte(method))
	writeUvarint(&b, uint64(count))
	for _, o := range opts {
		if InKey(o.ID) {
			writeUvarint(&b, uint64(o.ID))
			writeUvarint(&b, uint64(len(o.Value)))
			b.Write(o.Value)
		}
	}
	b.Write(payload)
	return Key(b.String())
}

// Resource returns the target and path the key was built with (path as
// message.Options.Path gives it, "/a/b"); ok is false for a string that
// KeyOf did not build.
func (k Key) Resource() (target, path string, ok bool) {
	res, _, ok := k.split()
	if !ok {
		return "", "", false
	}
	target, path, ok = strings.Cut(res, "\x00")
	return target, path, ok
}

// String returns a readable form of the key for logs and status pages, e.g.
// `GET coap://sensor-1/temp Uri-Query="unit=C" Accept=50`; a FETCH key ends
// with the payload length ("12B").
func (k Key) String() string {
	res, rest, ok := k.split()
	if !ok || len(rest) == 0 {
		return strconv.Quote(string(k))
	}
	target, path, _ := strings.Cut(res, "\x00")
	method := message.Code(rest[0])
	rest = rest[1:]
	var b strings.Builder
	b.WriteString(method.String())
	b.WriteByte(' ')
	b.WriteString(target)
	b.WriteString(path)
	count, n := uvarint(rest)
	if n <= 0 {
		return strconv.Quote(string(k))
	}
	rest = rest[n:]
	for range count {
		id, n := uvarint(rest)
		if n <= 0 {
			return strconv.Quote(string(k))
		}
		rest = rest[n:]
		l, n := uvarint(rest)
		if n <= 0 || uint64(len(rest)-n) < l {
			return strconv.Quote(string(k))
		}
		v := rest[n : n+int(l)]
		rest = rest[n+int(l):]
		oid := message.OptionID(id)
		if oid == message.URIPath {
			continue // already in the path
		}
		b.WriteByte(' ')
		b.WriteString(oid.String())
		b.WriteByte('=')
		b.WriteString(optionText(oid, v))
	}
	if len(rest) > 0 {
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(len(rest)))
		b.WriteByte('B')
	}
	return b.String()
}

// split returns the resource prefix of k and what follows it.
func (k Key) split() (res, rest string, ok bool) {
	n, w := uvarint(string(k))
	if w <= 0 || uint64(len(k)-w) < n {
		return "", "", false
	}
	return string(k[w : w+int(n)]), string(k[w+int(n):]), true
}

// resourceOf returns the index string of a target and path, as stored in a
// key: target 0x00 path, path with a leading "/" ("/" when empty).
func resourceOf(target, path string) string {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return target + "\x00" + path
}

func optionText(id message.OptionID, v string) string {
	if d, ok := id.Def(); ok {
		switch d.Format {
		case message.FormatString:
			return strconv.Quote(v)
		case message.FormatUint:
			u, err := message.Option{ID: id, Value: []byte(v)}.Uint()
			if err == nil {
				return strconv.FormatUint(uint64(u), 10)
			}
		}
	}
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 2+2*len(v))
	out = append(out, '0', 'x')
	for i := range len(v) {
		out = append(out, hex[v[i]>>4], hex[v[i]&15])
	}
	return string(out)
}

// writePath writes the Uri-Path of opts as "/a/b" and reports whether there
// was any segment.
func writePath(b *strings.Builder, opts message.Options) bool {
	wrote := false
	for _, o := range opts {
		if o.ID == message.URIPath {
			b.WriteByte('/')
			b.Write(o.Value)
			wrote = true
		}
	}
	return wrote
}

func sortedByID(opts message.Options) bool {
	for i := 1; i < len(opts); i++ {
		if opts[i].ID < opts[i-1].ID {
			return false
		}
	}
	return true
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func writeUvarint(b *strings.Builder, v uint64) {
	var buf [binary.MaxVarintLen64]byte
	b.Write(binary.AppendUvarint(buf[:0], v))
}

// uvarint decodes an unsigned varint at the start of s (encoding/binary's
// format) and returns it with its length; the length is 0 when s is too short
// or the value overflows 64 bits.
func uvarint(s string) (uint64, int) {
	var v uint64
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, 0
			}
			return v | uint64(c)<<(7*i), i + 1
		}
		v |= uint64(c&0x7f) << (7 * i)
	}
	return 0, 0
}
