package uri

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

func TestParse(t *testing.T) {
	type opt struct {
		id message.OptionID
		v  string
	}
	tests := []struct {
		url  string
		want []opt
		addr string
	}{
		{"coap://127.0.0.1/", nil, "127.0.0.1:5683"},
		{"coap://127.0.0.1", nil, "127.0.0.1:5683"},
		{"coap://127.0.0.1:5683/a", []opt{{message.URIPath, "a"}}, "127.0.0.1:5683"},
		{"coap://127.0.0.1:5690/a/b", []opt{{message.URIPort, "\x16\x3a"}, {message.URIPath, "a"}, {message.URIPath, "b"}}, "127.0.0.1:5690"},
		{"coaps://127.0.0.1:5684/x", []opt{{message.URIPath, "x"}}, "127.0.0.1:5684"},
		{"coaps://127.0.0.1:5683/x", []opt{{message.URIPort, "\x16\x33"}, {message.URIPath, "x"}}, "127.0.0.1:5683"},
		{"coap://[::1]:5700/s", []opt{{message.URIPort, "\x16\x44"}, {message.URIPath, "s"}}, "[::1]:5700"},
		{"coap://Example.COM/s", []opt{{message.URIHost, "example.com"}, {message.URIPath, "s"}}, "Example.COM:5683"},
		// RFC 7252 §6.6 example: percent-encoding and an encoded "/" inside a segment.
		{"coap://example.net/%7Esensors/a%2Fb?q=%26x&r", []opt{
			{message.URIHost, "example.net"}, {message.URIPath, "~sensors"}, {message.URIPath, "a/b"},
			{message.URIQuery, "q=&x"}, {message.URIQuery, "r"}}, "example.net:5683"},
		{"coap://h/a+b?x+y", []opt{{message.URIHost, "h"}, {message.URIPath, "a+b"}, {message.URIQuery, "x+y"}}, "h:5683"},
		{"coap://h/a//b/", []opt{{message.URIHost, "h"}, {message.URIPath, "a"}, {message.URIPath, ""}, {message.URIPath, "b"}, {message.URIPath, ""}}, "h:5683"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			u, opts, err := Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			var got []opt
			for _, o := range opts {
				got = append(got, opt{o.ID, string(o.Value)})
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("options %v\nwant %v", got, tt.want)
			}
			if a := Addr(u); a != tt.addr {
				t.Fatalf("Addr = %q want %q", a, tt.addr)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, raw := range []string{
		"http://127.0.0.1/",
		"/relative",
		"coap:opaque",
		"coap://127.0.0.1/a#frag",
		"coap:///nohost",
		"coap://127.0.0.1:99999/",
		"coap://127.0.0.1/%zz",
		"coap://127.0.0.1/?%zz",
	} {
		if _, _, err := Parse(raw); !errors.Is(err, ErrInvalidURL) {
			t.Errorf("Parse(%q) err = %v", raw, err)
		}
	}
}

func TestBuild(t *testing.T) {
	peer4 := netip.MustParseAddrPort("192.0.2.1:5683")
	peer6 := netip.MustParseAddrPort("[2001:db8::1]:61616")
	tests := []struct {
		name   string
		scheme string
		peer   netip.AddrPort
		opts   message.Options
		want   string
	}{
		{"bare", "coap", peer4, nil, "coap://192.0.2.1/"},
		{"ipv6 literal and port", "coap", peer6, message.Options{}.SetPath("/a"), "coap://[2001:db8::1]:61616/a"},
		{"host and port options", "coap", peer4,
			message.Options{}.SetString(message.URIHost, "example.net").SetUint(message.URIPort, 5690).SetPath("/x"),
			"coap://example.net:5690/x"},
		{"coaps default port omitted", "coaps", netip.MustParseAddrPort("192.0.2.1:5684"), nil, "coaps://192.0.2.1/"},
		{"escaping", "coap", peer4,
			message.Options{}.AddString(message.URIPath, "~sensors").AddString(message.URIPath, "a/b c").
				AddString(message.URIQuery, "q=&x").AddString(message.URIQuery, "r"),
			"coap://192.0.2.1/~sensors/a%2Fb%20c?q=%26x&r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Build(tt.scheme, tt.peer, tt.opts); got != tt.want {
				t.Fatalf("got %q want %q", got, tt.want)
			}
		})
	}
}

// FuzzParseURL checks that URL parsing never panics and that accepted URLs
// round-trip through BuildURL to the same options.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"coap://h/a/b?x=1", "coap://[::1]:5700/%2F", "coaps://127.0.0.1/", "coap://x/%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, opts, err := Parse(raw)
		if err != nil {
			return
		}
		// The peer carries the URL's port; its address matters only for IP literals.
		_, ps, _ := net.SplitHostPort(Addr(u))
		port, _ := strconv.Atoi(ps)
		peer := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
		if ap, err := netip.ParseAddrPort(Addr(u)); err == nil {
			peer = ap
		}
		again := Build(u.Scheme, peer, opts)
		_, opts2, err := Parse(again)
		if err != nil {
			t.Fatalf("rebuilt %q from %q does not parse: %v", again, raw, err)
		}
		if len(opts) != len(opts2) {
			t.Fatalf("%q -> %q: options %v vs %v", raw, again, opts, opts2)
		}
		for i := range opts {
			if opts[i].ID != opts2[i].ID || string(opts[i].Value) != string(opts2[i].Value) {
				t.Fatalf("%q -> %q: option %d %v %q vs %v %q", raw, again, i, opts[i].ID, opts[i].Value, opts2[i].ID, opts2[i].Value)
			}
		}
	})
}

func TestScheme(t *testing.T) {
	for _, tt := range []struct {
		in         string
		secure, ok bool
	}{{"coap", false, true}, {"COAPS", true, true}, {"coaps", true, true}, {"http", false, false}, {"", false, false}} {
		if s, ok := Scheme(tt.in); s != tt.secure || ok != tt.ok {
			t.Errorf("Scheme(%q) = %v, %v", tt.in, s, ok)
		}
	}
	if DefaultPortOf(false) != 5683 || DefaultPortOf(true) != 5684 || SchemeName(true) != "coaps" || SchemeName(false) != "coap" {
		t.Error("default ports or scheme names")
	}
}

// TestAuthorityOptions: the options built from an authority are those Parse
// finds in the same URL, so a request built from parts equals one parsed
// from a string.
func TestAuthorityOptions(t *testing.T) {
	for _, tt := range []struct {
		secure   bool
		hostport string
		addr     string
	}{
		{false, "127.0.0.1", "127.0.0.1:5683"},
		{false, "127.0.0.1:5683", "127.0.0.1:5683"},
		{false, "127.0.0.1:5690", "127.0.0.1:5690"},
		{true, "127.0.0.1", "127.0.0.1:5684"},
		{true, "127.0.0.1:5683", "127.0.0.1:5683"},
		{false, "[::1]", "[::1]:5683"},
		{false, "[::1]:5700", "[::1]:5700"},
		{false, "Example.COM", "Example.COM:5683"},
		{true, "sensor.local:5684", "sensor.local:5684"},
	} {
		a, err := ParseAuthority(tt.secure, tt.hostport)
		if err != nil {
			t.Fatalf("ParseAuthority(%q): %v", tt.hostport, err)
		}
		if a.Addr() != tt.addr {
			t.Errorf("ParseAuthority(%q).Addr() = %q, want %q", tt.hostport, a.Addr(), tt.addr)
		}
		segs := []string{"a b", "c/d", ""}
		built, err := AppendPath(a.Options(), segs)
		if err != nil {
			t.Fatal(err)
		}
		raw := SchemeName(tt.secure) + "://" + tt.hostport + "/a%20b/c%2Fd/"
		_, parsed, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(built, parsed) {
			t.Errorf("%s: built %v, parsed %v", raw, built, parsed)
		}
	}
	for _, bad := range []string{"", "u@h", "h:0", "h:70000", "h:x", "h/p", "h?q", "bad host"} {
		if _, err := ParseAuthority(false, bad); !errors.Is(err, ErrInvalidURL) {
			t.Errorf("ParseAuthority(%q) err = %v", bad, err)
		}
	}
	if _, err := AppendPath(nil, []string{string(make([]byte, 256))}); !errors.Is(err, ErrInvalidURL) {
		t.Errorf("256-byte segment: %v", err)
	}
}
