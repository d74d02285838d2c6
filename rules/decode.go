package rules

import (
	"crypto/sha256"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// sectionKeys lists the keys each section accepts.
var sectionKeys = map[string][]string{
	"device":   {"name", "url", "psk_identity", "psk", "cert_file", "key_file", "ca_file", "pins"},
	"ingress":  {"name", "path", "methods", "topic", "qos", "retain", "payload", "where", "transform", "identity", "rt", "if"},
	"observe":  {"name", "devices", "paths", "discover", "catalog_topic", "topic", "qos", "retain", "payload", "where", "transform"},
	"poll":     {"name", "devices", "paths", "interval", "on_change", "topic", "qos", "retain", "payload", "where", "transform"},
	"command":  {"name", "filter", "method", "url", "response_topic", "timeout", "queue_ttl", "qos", "content_format"},
	"resource": {"name", "path", "topic", "identity", "content_format", "rt", "if"},
	"proxy":    {"name", "path", "url", "methods", "timeout", "forward", "http", "cache", "stale"},
}

// dec reads the typed keys of one entry, reporting problems as it goes.
type dec struct {
	e   *entry
	d   *diags
	dir string
}

func (x *dec) pos(line int) Pos { return Pos{File: x.e.pos.File, Line: line} }

// what names the entry in messages: [[ingress]] "telemetry".
func (x *dec) what() string {
	if f := x.e.byKey["name"]; f != nil && f.val.kind == vString && f.val.str != "" {
		return fmt.Sprintf("[[%s]] %q", x.e.section, f.val.str)
	}
	return "[[" + x.e.section + "]]"
}

// checkKeys reports keys the section does not accept.
func (x *dec) checkKeys() {
	allowed := sectionKeys[x.e.section]
	for _, f := range x.e.fields {
		if !contains(allowed, f.key) {
			x.d.addf(x.pos(f.line), "unknown key %q in [[%s]]%s", clip(f.key), x.e.section, suggest(f.key, allowed))
		}
	}
}

func (x *dec) get(key string, required bool) *field {
	f := x.e.byKey[key]
	if f != nil && f.val.kind == vReported {
		return nil
	}
	if f == nil && required {
		x.d.addf(x.e.pos, "%s: missing required key %q", x.what(), key)
	}
	return f
}

func (x *dec) typeErr(f *field, want string) {
	x.d.addf(x.pos(f.val.line), "key %q: expected %s, got %s", f.key, want, f.val.kind)
}

// str returns a string value; ok is false when absent or invalid.
func (x *dec) str(key string, required bool) (string, int, bool) {
	f := x.get(key, required)
	if f == nil {
		return "", x.e.pos.Line, false
	}
	if f.val.kind != vString {
		x.typeErr(f, "a string")
		return "", f.line, false
	}
	if f.val.str == "" {
		x.d.addf(x.pos(f.line), "key %q: must not be empty", key)
		return "", f.line, false
	}
	return f.val.str, f.line, true
}

// strs returns a non-empty array of non-empty strings.
func (x *dec) strs(key string, required bool) ([]string, int, bool) {
	f := x.get(key, required)
	if f == nil {
		return nil, x.e.pos.Line, false
	}
	if f.val.kind != vArray {
		x.typeErr(f, "an array of strings")
		return nil, f.line, false
	}
	if len(f.val.arr) == 0 {
		x.d.addf(x.pos(f.line), "key %q: must not be empty", key)
		return nil, f.line, false
	}
	out := make([]string, 0, len(f.val.arr))
	ok := true
	for _, v := range f.val.arr {
		if v.kind != vString || v.str == "" {
			x.d.addf(x.pos(v.line), "key %q: expected non-empty strings, got %s", key, v.kind)
			ok = false
			continue
		}
		out = append(out, v.str)
	}
	return out, f.line, ok
}

func (x *dec) boolean(key string) bool {
	f := x.get(key, false)
	if f == nil {
		return false
	}
	if f.val.kind != vBool {
		x.typeErr(f, "true or false")
		return false
	}
	return f.val.b
}

// qos reads an MQTT QoS level ([MQTT-3.3.1-4]: 0, 1 or 2).
func (x *dec) qos() byte {
	f := x.get("qos", false)
	if f == nil {
		return 0
	}
	switch {
	case f.val.kind == vInt && f.val.i >= 0 && f.val.i <= 2:
		return byte(f.val.i)
	case f.val.kind == vInt:
		x.d.addf(x.pos(f.line), "key \"qos\": %d is not an MQTT QoS level (0, 1 or 2)", f.val.i)
	case f.val.kind == vFloat && math.IsInf(f.val.f, 0):
		x.d.addf(x.pos(f.line), "key \"qos\": value is not an MQTT QoS level (0, 1 or 2)")
	default:
		x.typeErr(f, "an integer")
	}
	return 0
}

func (x *dec) duration(key string, required bool) (time.Duration, bool) {
	s, line, ok := x.str(key, required)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		x.d.addf(x.pos(line), "key %q: bad duration %q (write e.g. \"30s\", \"5m\")", key, clip(s))
		return 0, false
	}
	if d <= 0 {
		x.d.addf(x.pos(line), "key %q: duration must be positive, got %q", key, clip(s))
		return 0, false
	}
	return d, true
}

func (x *dec) pattern(key string, syn Syntax, required bool) (Pattern, bool) {
	s, line, ok := x.str(key, required)
	if !ok {
		return Pattern{}, false
	}
	p, err := parsePattern(s, syn)
	if err != nil {
		x.d.addf(x.pos(line), "key %q: %s", key, strings.TrimPrefix(err.Error(), "rules: "))
		return Pattern{}, false
	}
	return p, true
}

func (x *dec) contentFormat() *message.MediaType {
	f := x.get("content_format", false)
	if f == nil {
		return nil
	}
	var cf message.MediaType
	var err error
	switch f.val.kind {
	case vString:
		var ok bool
		if cf, ok = message.ParseContentFormat(f.val.str); !ok {
			err = fmt.Errorf("unknown content format %q (want text, json, cbor, senml+json, senml+cbor, octet-stream, ... or a number)", clip(f.val.str))
		}
	case vInt:
		if f.val.i < 0 || f.val.i > 65535 {
			err = fmt.Errorf("content format %d is outside 0-65535", f.val.i)
		}
		cf = message.MediaType(f.val.i)
	default:
		x.typeErr(f, "a string or an integer")
		return nil
	}
	if err != nil {
		x.d.addf(x.pos(f.line), "key \"content_format\": %v", err)
		return nil
	}
	return &cf
}

// linkAttr reads rt or if: one or more values separated by spaces, as in
// link-format (RFC 6690 §3.1, §3.2), such as "temperature" or
// "oic.r.temperature sensor". A value is printable ASCII without quotes,
// backslashes, commas, semicolons, angle brackets or '*', so it reads the
// same in a /.well-known/core document and in a query filter (§4.1, where a
// trailing '*' asks for a prefix and any other '*' is refused).
func (x *dec) linkAttr(key string) []string {
	s, line, ok := x.str(key, false)
	if !ok {
		return nil
	}
	var vals []string
	for _, v := range strings.Split(s, " ") {
		if v == "" {
			continue
		}
		for i := 0; i < len(v); i++ {
			if c := v[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("\"\\,;<>*", c) >= 0 {
				x.d.addf(x.pos(line), "key %q: %q: byte %q is not allowed (separate values with spaces)", key, clip(v), c)
				return nil
			}
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		x.d.addf(x.pos(line), "key %q: must not be empty", key)
	}
	return vals
}

func (x *dec) file(key string) string {
	s, _, ok := x.str(key, false)
	if !ok {
		return ""
	}
	if !filepath.IsAbs(s) && x.dir != "" {
		return filepath.Join(x.dir, s)
	}
	return s
}

// hash digests the entry's keys and values, independent of key order and
// positions.
func (x *dec) hash() Hash {
	fs := append([]*field(nil), x.e.fields...)
	sort.Slice(fs, func(i, j int) bool { return fs[i].key < fs[j].key })
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", x.e.section, x.dir)
	for _, f := range fs {
		fmt.Fprintf(h, "%s=", f.key)
		writeValue(h, f.val)
		h.Write([]byte{0})
	}
	var out Hash
	h.Sum(out[:0])
	return out
}

func writeValue(h interface{ Write([]byte) (int, error) }, v value) {
	switch v.kind {
	case vArray:
		fmt.Fprintf(h, "[%d:", len(v.arr))
		for _, e := range v.arr {
			writeValue(h, e)
			h.Write([]byte{','})
		}
		h.Write([]byte{']'})
	default:
		fmt.Fprintf(h, "%d:%q:%d:%g:%t", v.kind, v.str, v.i, v.f, v.b)
	}
}
