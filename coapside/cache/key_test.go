package cache_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/cache"
	"github.com/coap-mqtt/bridge/coapside/message"
)

const target = "coap://sensor-1"

// opt builds an option; u is a uint value, s a string one.
func u(id message.OptionID, v uint32) message.Option {
	return message.Option{ID: id, Value: message.UintBytes(v)}
}

func s(id message.OptionID, v string) message.Option {
	return message.Option{ID: id, Value: []byte(v)}
}

// sorted returns the options in the order message.Options.Add keeps.
func sorted(o ...message.Option) message.Options {
	var out message.Options
	for _, op := range o {
		out = out.Add(op.ID, op.Value)
	}
	return out
}

type req struct {
	method  message.Code
	target  string
	opts    message.Options
	payload []byte
}

func (r req) key() cache.Key { return cache.KeyOf(r.method, r.target, r.opts, r.payload) }

func get(o ...message.Option) req { return req{message.GET, target, sorted(o...), nil} }

func TestKeyOfEqual(t *testing.T) {
	base := []message.Option{s(message.URIPath, "a"), s(message.URIPath, "b"), s(message.URIQuery, "unit=C"), u(message.Accept, 50)}
	tests := []struct {
		name string
		a, b req
	}{
		{"same request", get(base...), get(base...)},
		{"non-repeatable options out of order",
			get(base...),
			req{message.GET, target, message.Options{u(message.Accept, 50), s(message.URIPath, "a"), s(message.URIQuery, "unit=C"), s(message.URIPath, "b")}, nil}},
		{"ETag ignored", get(base...), get(append(base, s(message.ETag, "\x01\x02"))...)},
		{"two ETags ignored", get(append(base, s(message.ETag, "\x01"), s(message.ETag, "\x02"))...), get(base...)},
		{"Observe ignored", get(append(base, u(message.Observe, 0))...), get(base...)},
		{"Block2 ignored", get(append(base, u(message.Block2, 0x16))...), get(append(base, u(message.Block2, 0x26))...)},
		{"Block1 Size1 Size2 ignored", get(append(base, u(message.Block1, 6), u(message.Size1, 100), u(message.Size2, 0))...), get(base...)},
		{"Uri-Host Uri-Port ignored", get(append(base, s(message.URIHost, "10.0.0.1"), u(message.URIPort, 5683))...), get(base...)},
		{"Proxy-Uri Proxy-Scheme ignored", get(append(base, s(message.ProxyURI, "coap://x/a/b"), s(message.ProxyScheme, "coap"))...), get(base...)},
		{"No-Response ignored", get(append(base, u(message.NoResponse, 2))...), get(base...)},
		{"Echo ignored (NoCacheKey)", get(append(base, s(message.Echo, "\x07\x07"))...), get(base...)},
		{"unknown NoCacheKey option ignored", get(append(base, s(124, "x"))...), get(base...)},
		{"GET payload ignored", req{message.GET, target, sorted(base...), []byte("x")}, get(base...)},
		{"FETCH same payload",
			req{message.FETCH, target, sorted(append(base, u(message.ContentFormat, 50))...), []byte(`{"q":1}`)},
			req{message.FETCH, target, sorted(append(base, u(message.ContentFormat, 50), u(message.Block2, 2))...), []byte(`{"q":1}`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ka, kb := tt.a.key(), tt.b.key(); ka != kb {
				t.Errorf("keys differ:\n %s\n %s", ka, kb)
			}
		})
	}
}

func TestKeyOfDifferent(t *testing.T) {
	base := []message.Option{s(message.URIPath, "a"), s(message.URIPath, "b")}
	fetch := func(cf uint32, payload string) req {
		return req{message.FETCH, target, sorted(append(base, u(message.ContentFormat, cf))...), []byte(payload)}
	}
	tests := []struct {
		name string
		a, b req
	}{
		{"Accept differs", get(append(base, u(message.Accept, 50))...), get(append(base, u(message.Accept, 60))...)},
		{"Accept absent", get(append(base, u(message.Accept, 50))...), get(base...)},
		{"Uri-Query differs", get(append(base, s(message.URIQuery, "unit=C"))...), get(append(base, s(message.URIQuery, "unit=F"))...)},
		{"Uri-Query absent", get(append(base, s(message.URIQuery, "unit=C"))...), get(base...)},
		{"Uri-Query order", get(append(base, s(message.URIQuery, "a"), s(message.URIQuery, "b"))...), get(append(base, s(message.URIQuery, "b"), s(message.URIQuery, "a"))...)},
		{"Uri-Path order", get(s(message.URIPath, "a"), s(message.URIPath, "b")), get(s(message.URIPath, "b"), s(message.URIPath, "a"))},
		{"Uri-Path segment holding a slash", get(s(message.URIPath, "a/b")), get(s(message.URIPath, "a"), s(message.URIPath, "b"))},
		{"Uri-Path prefix", get(s(message.URIPath, "a")), get(s(message.URIPath, "a"), s(message.URIPath, ""))},
		{"no path vs empty segment", get(), get(s(message.URIPath, ""))},
		{"target differs", get(base...), req{message.GET, "coap://sensor-2", sorted(base...), nil}},
		{"scheme differs", get(base...), req{message.GET, "coaps://sensor-1", sorted(base...), nil}},
		{"method differs", get(base...), req{message.FETCH, target, sorted(base...), nil}},
		{"FETCH payload differs", fetch(50, `{"q":1}`), fetch(50, `{"q":2}`)},
		{"FETCH payload absent", fetch(50, `{"q":1}`), fetch(50, ``)},
		{"FETCH Content-Format differs", fetch(50, `{"q":1}`), fetch(60, `{"q":1}`)},
		{"unknown elective option", get(append(base, s(65000, "x"))...), get(base...)},
		{"Request-Tag", get(append(base, s(message.RequestTag, "\x01"))...), get(base...)},
		{"If-None-Match", get(append(base, message.Option{ID: message.IfNoneMatch})...), get(base...)},
		// The resource prefix must not let an option value pass for part of
		// the target, nor the target for part of the path.
		{"target holding a NUL", req{message.GET, "coap://a\x00/b", nil, nil}, req{message.GET, "coap://a", sorted(s(message.URIPath, "b")), nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ka, kb := tt.a.key(), tt.b.key(); ka == kb {
				t.Errorf("same key %s", ka)
			}
		})
	}
}

func TestKeyOfLeavesOptionsAlone(t *testing.T) {
	opts := message.Options{u(message.Accept, 50), s(message.URIPath, "b"), s(message.URIPath, "a")}
	want := append(message.Options(nil), opts...)
	cache.KeyOf(message.GET, target, opts, nil)
	for i := range want {
		if opts[i].ID != want[i].ID || string(opts[i].Value) != string(want[i].Value) {
			t.Fatalf("options reordered: %v", opts)
		}
	}
}

func TestInKey(t *testing.T) {
	out := []message.OptionID{message.ETag, message.Observe, message.Block1, message.Block2,
		message.Size1, message.Size2, message.URIHost, message.URIPort, message.ProxyURI,
		message.ProxyScheme, message.NoResponse, message.Echo, 124}
	in := []message.OptionID{message.IfMatch, message.IfNoneMatch, message.URIPath,
		message.ContentFormat, message.URIQuery, message.Accept, message.RequestTag, 65000}
	for _, id := range out {
		if cache.InKey(id) {
			t.Errorf("InKey(%v) = true", id)
		}
	}
	for _, id := range in {
		if !cache.InKey(id) {
			t.Errorf("InKey(%v) = false", id)
		}
	}
}

func TestKeyResourceAndString(t *testing.T) {
	tests := []struct {
		r          req
		path, text string
	}{
		{get(), "/", "GET coap://sensor-1/"},
		{get(s(message.URIPath, "temp"), s(message.URIQuery, "unit=C"), u(message.Accept, 50), u(message.Observe, 0)),
			"/temp", `GET coap://sensor-1/temp Uri-Query="unit=C" Accept=50`},
		{req{message.FETCH, target, sorted(s(message.URIPath, "q"), u(message.ContentFormat, 60)), []byte{1, 2, 3}},
			"/q", "FETCH coap://sensor-1/q Content-Format=60 3B"},
		{get(s(message.URIPath, "a"), s(message.URIPath, ""), s(65000, "\xff")), "/a/", "GET coap://sensor-1/a/ Option(65000)=0xff"},
	}
	for _, tt := range tests {
		k := tt.r.key()
		tg, p, ok := k.Resource()
		if !ok || tg != target || p != tt.path {
			t.Errorf("Resource() = %q, %q, %v; want %q, %q", tg, p, ok, target, tt.path)
		}
		if got := k.String(); got != tt.text {
			t.Errorf("String() = %q, want %q", got, tt.text)
		}
	}
	for _, bad := range []cache.Key{"", "\xff", "\x05ab", "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"} {
		if _, _, ok := bad.Resource(); ok {
			t.Errorf("Resource(%q) ok", string(bad))
		}
		_ = bad.String() // must not panic
	}
}

func FuzzKeyString(f *testing.F) {
	f.Add(string(get(s(message.URIPath, "temp"), u(message.Accept, 50)).key()))
	f.Add("\x03a\x00/\x01\x02\x0f\x01a")
	f.Fuzz(func(t *testing.T, k string) {
		_ = cache.Key(k).String()
		_, _, _ = cache.Key(k).Resource()
	})
}

// FuzzKeyOf checks that a key gives back the target and path it was built
// with, whatever the path segments hold, and that equal requests with their
// options in another order give the same key.
func FuzzKeyOf(f *testing.F) {
	f.Add("coap://sensor-1", "temp", "unit=C", uint32(50), []byte(nil))
	f.Add("coap://a", "a/b\x00", "", uint32(0), []byte{1})
	f.Fuzz(func(t *testing.T, tgt, seg, query string, accept uint32, payload []byte) {
		if strings.Contains(tgt, "\x00") {
			return // targets are canonical scheme://device strings
		}
		opts := sorted(s(message.URIPath, seg), s(message.URIPath, "x"), s(message.URIQuery, query), u(message.Accept, accept))
		k := cache.KeyOf(message.FETCH, tgt, opts, payload)
		gt, gp, ok := k.Resource()
		if !ok || gt != tgt || gp != opts.Path() {
			t.Fatalf("Resource() = %q, %q, %v; want %q, %q", gt, gp, ok, tgt, opts.Path())
		}
		_ = k.String()
		shuffled := message.Options{opts[3], opts[2], opts[0], opts[1]}
		if !slices.Equal(shuffled.Strings(message.URIPath), opts.Strings(message.URIPath)) {
			t.Fatal("test options out of order")
		}
		if k2 := cache.KeyOf(message.FETCH, tgt, shuffled, payload); k2 != k {
			t.Fatalf("keys differ: %s / %s", k, k2)
		}
	})
}
