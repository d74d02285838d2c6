package rules

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coap-mqtt/bridge/coapside/linkformat"
)

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if r == '"' || r == '\\' || r < 0x20 || r == 0x7f {
			fmt.Fprintf(&b, "\\u%04X", r)
			continue
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// FuzzLinkAttrs checks the rt and if attributes of a resource rule: values
// the loader accepts are exactly the space-separated words of the key, and
// they read the same in the /.well-known/core document the bridge serves
// and in a discovery query filter (RFC 6690 §3.1, §3.2, §4.1).
func FuzzLinkAttrs(f *testing.F) {
	for _, s := range [][2]string{
		{"temperature", "sensor"}, {"oic.r.temperature  sensor ", "core.s"},
		{"  ", "x"}, {"temp\"erature", "a"}, {"a", "sensor,actuator"},
		{"a*", "b;c"}, {"é", "<x>"}, {"a\tb", "c\\d"}, {"x=y", "'q'"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, rt, ifs string) {
		if !utf8.ValidString(rt) || !utf8.ValidString(ifs) {
			return // not writable in a TOML file
		}
		doc := fmt.Sprintf("[[resource]]\nname = \"r\"\npath = \"/r\"\ntopic = \"r\"\nrt = %s\nif = %s\n", tomlString(rt), tomlString(ifs))
		s, err := Parse(Source{Name: "fuzz.toml", Data: []byte(doc)})
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %T %v is not a non-empty Errors", err, err)
			}
			return
		}
		r := s.Resources[0]
		if !reflect.DeepEqual(r.ResourceTypes, strings.Fields(rt)) || !reflect.DeepEqual(r.Interfaces, strings.Fields(ifs)) {
			t.Fatalf("rt %q if %q loaded as %q %q", rt, ifs, r.ResourceTypes, r.Interfaces)
		}
		res := []linkformat.Resource{{Path: "/r", ResourceTypes: r.ResourceTypes, Interfaces: r.Interfaces}}
		wkc, err := linkformat.WellKnownCore(res, nil)
		if err != nil {
			t.Fatalf("rt %q if %q: no discovery document: %v", rt, ifs, err)
		}
		links, err := linkformat.Parse(wkc)
		if err != nil || len(links) != 1 {
			t.Fatalf("document %q does not parse back: %v", wkc, err)
		}
		if got := links[0].Values("rt"); !reflect.DeepEqual(got, r.ResourceTypes) {
			t.Fatalf("document %q: rt %q, want %q", wkc, got, r.ResourceTypes)
		}
		if got := links[0].Values("if"); !reflect.DeepEqual(got, r.Interfaces) {
			t.Fatalf("document %q: if %q, want %q", wkc, got, r.Interfaces)
		}
		for name, vals := range map[string][]string{"rt": r.ResourceTypes, "if": r.Interfaces} {
			for _, v := range vals {
				out, err := linkformat.WellKnownCore(res, []string{name + "=" + v})
				if err != nil || len(out) == 0 {
					t.Fatalf("query %s=%s does not find the resource: %q, %v", name, v, out, err)
				}
			}
		}
	})
}
