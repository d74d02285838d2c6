package rules

import (
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
)

// TestTargetRequest: a command's target carries the request options a
// coap:// URL of the same device and path parses to, and prints as that
// URL: the request is built from parts, never from a string parsed back.
func TestTargetRequest(t *testing.T) {
	s := mustLoad(t, `
[[device]]
name = "ip"
url  = "coap://10.0.0.1:5690"

[[device]]
name = "named"
url  = "coap://Sensor.Local"

[[device]]
name         = "secure"
url          = "coaps://[2001:db8::7]:5683"
psk_identity = "secure"
psk          = "k"

[[command]]
name   = "c"
filter = "cmd/{device}/{resource...}"
method = "PUT"
url    = "coap://{device}/x/{resource...}"

[[command]]
name   = "literal"
filter = "lit/{what...}"
method = "POST"
url    = "coaps://gateway.example:6000/{what...}"
`)
	for _, topic := range []string{
		"cmd/ip/led", "cmd/named/a b/ü/50%/c;d,e?f", "cmd/secure/x:y@z/~!$&'()*=",
		"lit/a/b", "lit/" + strings.Repeat("s", 255),
	} {
		c, caps, ok := s.MatchCommand(topic, nil)
		if !ok {
			t.Fatalf("%q: no match", topic)
		}
		tg, err := s.Target(c, caps)
		if err != nil {
			t.Fatalf("%q: %v", topic, err)
		}
		escaped := make([]string, len(tg.Path))
		for i, p := range tg.Path {
			escaped[i] = url.PathEscape(p)
		}
		raw := uri.SchemeName(tg.Secure) + "://" + tg.Host + "/" + strings.Join(escaped, "/")
		u, opts, err := uri.Parse(raw)
		if err != nil {
			t.Fatalf("%q: %s: %v", topic, raw, err)
		}
		if !reflect.DeepEqual(tg.Options, opts) {
			t.Errorf("%q: options %v, the URL %s parses to %v", topic, tg.Options, raw, opts)
		}
		if got := tg.URL().String(); got != u.String() || got != raw {
			t.Errorf("%q: URL %s, want %s", topic, got, raw)
		}
	}

	// Each target owns its options: building or extending one leaves the
	// others (and the device's) alone.
	c, caps, _ := s.MatchCommand("cmd/named/led", nil)
	a, _ := s.Target(c, caps)
	c, caps, _ = s.MatchCommand("cmd/named/other", nil)
	b, _ := s.Target(c, caps)
	a.Options = a.Options.SetContentFormat(message.AppCBOR)
	if got := a.Options.Strings(message.URIPath); strings.Join(got, "/") != "x/led" {
		t.Errorf("first target's path became %v", got)
	}
	if _, ok := b.Options.ContentFormat(); ok || strings.Join(b.Options.Strings(message.URIPath), "/") != "x/other" {
		t.Errorf("targets share options: %v / %v", a.Options, b.Options)
	}
	if d, _ := s.Device("named"); len(d.Options) != 1 {
		t.Errorf("device options changed: %v", d.Options)
	}

	c, caps, _ = s.MatchCommand("lit/"+strings.Repeat("s", 256), nil)
	if _, err := s.Target(c, caps); !errors.Is(err, uri.ErrInvalidURL) {
		t.Errorf("256-byte segment: %v, want uri.ErrInvalidURL", err)
	}
}
