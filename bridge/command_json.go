package bridge

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
)

// marshal returns res as JSON, byte for byte what encoding/json makes of
// it (field order, omitempty, HTML-safe string escaping, compacted
// payload), without reflection: every command's result is encoded, and
// json.Marshal was a tenth of the command path's own CPU.
func (res *commandResult) marshal() []byte {
	// The keys take some 180 bytes, numbers and quotes a few dozen more.
	n := 240 + len(res.Status) + len(res.Rule) + len(res.Topic) + len(res.Device) + len(res.Method) + len(res.URL) +
		len(res.Code) + len(res.CodeName) + len(res.Payload) + len(res.PayloadBase64) + len(res.Error) + len(res.ExpiresAt)
	b := make([]byte, 0, n)
	b = append(b, `{"status":`...)
	b = appendJSONString(b, res.Status)
	b = append(b, `,"rule":`...)
	b = appendJSONString(b, res.Rule)
	b = append(b, `,"topic":`...)
	b = appendJSONString(b, res.Topic)
	b = appendStringField(b, `,"device":`, res.Device)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, res.Method)
	b = appendStringField(b, `,"url":`, res.URL)
	b = appendStringField(b, `,"code":`, res.Code)
	b = appendStringField(b, `,"code_name":`, res.CodeName)
	if res.ContentFormat != nil {
		b = append(b, `,"content_format":`...)
		b = strconv.AppendInt(b, int64(*res.ContentFormat), 10)
	}
	if len(res.Payload) > 0 {
		b = append(b, `,"payload":`...)
		var ok bool
		if b, ok = appendCompactJSON(b, res.Payload); !ok {
			return res.marshalSlow() // not JSON: encoding/json refuses the result
		}
	}
	b = appendStringField(b, `,"payload_base64":`, res.PayloadBase64)
	b = append(b, `,"rtt_ms":`...)
	var ok bool
	if b, ok = appendJSONFloat(b, res.RTTMillis); !ok {
		return res.marshalSlow()
	}
	b = appendStringField(b, `,"error":`, res.Error)
	if res.Position != 0 {
		b = append(b, `,"position":`...)
		b = strconv.AppendInt(b, int64(res.Position), 10)
	}
	b = appendStringField(b, `,"expires_at":`, res.ExpiresAt)
	return append(b, '}')
}

// marshalSlow is json.Marshal of a copy of res: res itself, often on
// its caller's stack, does not escape to the heap.
func (res *commandResult) marshalSlow() []byte {
	c := *res
	body, _ := json.Marshal(&c)
	return body
}

// appendStringField appends an omitempty string field: its key (with the
// leading comma) and value, or nothing for "".
func appendStringField(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendJSONString(append(b, key...), v)
}

// appendJSONString appends s as a JSON string the way encoding/json
// writes one: <, > and & as \u003c, \u003e and \u0026, control
// characters escaped, invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendJSONString[T ~string | ~[]byte](b []byte, s T) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(len(s), i+utf8.UTFMax)]))
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendCompactJSON appends the JSON value p as encoding/json writes a
// json.RawMessage: compacted and HTML-escaped. A result's payload was
// checked to be JSON where it was set (fillResponse), so p is trusted
// when there is nothing to compact or escape, the common case; ok is
// false when p turns out not to be JSON.
func appendCompactJSON(b, p []byte) ([]byte, bool) {
	if !needsCompacting(p) {
		return append(b, p...), true
	}
	var compact, escaped bytes.Buffer
	if err := json.Compact(&compact, p); err != nil {
		return b, false
	}
	json.HTMLEscape(&escaped, compact.Bytes())
	return append(b, escaped.Bytes()...), true
}

// needsCompacting reports whether the JSON value p has white space
// outside its strings, or characters json.HTMLEscape escapes.
func needsCompacting(p []byte) bool {
	inString, escaped := false, false
	for i, c := range p {
		switch {
		case c == '<' || c == '>' || c == '&':
			return true
		case c == 0xE2 && i+2 < len(p) && p[i+1] == 0x80 && (p[i+2] == 0xA8 || p[i+2] == 0xA9): // U+2028, U+2029
			return true
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			return true
		}
	}
	return false
}

// appendJSONFloat appends f as encoding/json writes a float64 (as
// ECMAScript formats numbers); ok is false for NaN and infinities, which
// JSON cannot hold.
func appendJSONFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-07 is written e-7.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}
