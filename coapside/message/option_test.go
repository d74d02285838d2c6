package message

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestOptionProperties(t *testing.T) {
	tests := []struct {
		id                                   OptionID
		name                                 string
		critical, unsafe, noCacheKey, repeat bool
		format                               Format
	}{
		{IfMatch, "If-Match", true, false, false, true, FormatOpaque},
		{URIHost, "Uri-Host", true, true, false, false, FormatString},
		{ETag, "ETag", false, false, false, true, FormatOpaque},
		{IfNoneMatch, "If-None-Match", true, false, false, false, FormatEmpty},
		{Observe, "Observe", false, true, false, false, FormatUint},
		{URIPort, "Uri-Port", true, true, false, false, FormatUint},
		{LocationPath, "Location-Path", false, false, false, true, FormatString},
		{URIPath, "Uri-Path", true, true, false, true, FormatString},
		{ContentFormat, "Content-Format", false, false, false, false, FormatUint},
		{MaxAge, "Max-Age", false, true, false, false, FormatUint},
		{URIQuery, "Uri-Query", true, true, false, true, FormatString},
		{Accept, "Accept", true, false, false, false, FormatUint},
		{LocationQuery, "Location-Query", false, false, false, true, FormatString},
		{Block2, "Block2", true, true, false, false, FormatUint},
		{Block1, "Block1", true, true, false, false, FormatUint},
		{Size2, "Size2", false, false, true, false, FormatUint},
		{ProxyURI, "Proxy-Uri", true, true, false, false, FormatString},
		{ProxyScheme, "Proxy-Scheme", true, true, false, false, FormatString},
		{Size1, "Size1", false, false, true, false, FormatUint},
		{Echo, "Echo", false, false, true, false, FormatOpaque},
		{RequestTag, "Request-Tag", false, false, false, true, FormatOpaque},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok := tt.id.Def()
			if !ok || d.Name != tt.name || tt.id.String() != tt.name {
				t.Fatalf("Def = %+v %v", d, ok)
			}
			if tt.id.Critical() != tt.critical || tt.id.Unsafe() != tt.unsafe || tt.id.NoCacheKey() != tt.noCacheKey {
				t.Fatalf("C/U/N = %v/%v/%v", tt.id.Critical(), tt.id.Unsafe(), tt.id.NoCacheKey())
			}
			if d.Repeatable != tt.repeat || d.Format != tt.format {
				t.Fatalf("repeatable/format = %v/%v", d.Repeatable, d.Format)
			}
		})
	}
	if OptionID(9).String() != "Option(9)" || OptionID(9).Known() {
		t.Fatal("unknown option 9 rendered as known")
	}
}

func TestUintEncoding(t *testing.T) {
	tests := []struct {
		v    uint32
		wire []byte
	}{
		{0, nil},
		{1, []byte{1}},
		{255, []byte{0xff}},
		{256, []byte{1, 0}},
		{65535, []byte{0xff, 0xff}},
		{1 << 16, []byte{1, 0, 0}},
		{1<<24 + 2, []byte{1, 0, 0, 2}},
		{0xffffffff, []byte{0xff, 0xff, 0xff, 0xff}},
	}
	for _, tt := range tests {
		got := UintBytes(tt.v)
		if !bytes.Equal(got, tt.wire) {
			t.Fatalf("UintBytes(%d) = % x, want % x", tt.v, got, tt.wire)
		}
		v, err := Option{MaxAge, got}.Uint()
		if err != nil || v != tt.v {
			t.Fatalf("Uint(% x) = %d %v", got, v, err)
		}
	}
	// A receiver accepts leading zeros (RFC 7252 §3.2).
	if v, _ := (Option{MaxAge, []byte{0, 0, 5}}).Uint(); v != 5 {
		t.Fatalf("leading zeros: %d", v)
	}
	if _, err := (Option{MaxAge, []byte{1, 2, 3, 4, 5}}).Uint(); !errors.Is(err, ErrOptionFormat) {
		t.Fatalf("5-byte uint err = %v", err)
	}
}

func TestOptionsAccessors(t *testing.T) {
	var o Options
	o = o.SetPath("/sensors/temp")
	o = o.AddString(URIQuery, "a=1")
	o = o.SetContentFormat(AppJSON)
	o = o.AddString(URIHost, "example.org")
	o = o.AddString(URIQuery, "b=2")
	o = o.SetUint(Observe, 0)
	if !o.sorted() {
		t.Fatalf("not sorted: %v", o)
	}
	if p := o.Path(); p != "/sensors/temp" {
		t.Fatalf("Path = %q", p)
	}
	if q := o.Queries(); len(q) != 2 || q[0] != "a=1" || q[1] != "b=2" {
		t.Fatalf("Queries = %q", q)
	}
	if cf, ok := o.ContentFormat(); !ok || cf != AppJSON {
		t.Fatalf("ContentFormat = %v %v", cf, ok)
	}
	if _, ok := o.Accept(); ok {
		t.Fatal("Accept present")
	}
	if obs, ok := o.Observe(); !ok || obs != 0 {
		t.Fatalf("Observe = %v %v", obs, ok)
	}
	if o.MaxAge() != 60 {
		t.Fatalf("default Max-Age = %d", o.MaxAge())
	}
	o = o.SetUint(MaxAge, 5)
	if o.MaxAge() != 5 {
		t.Fatalf("Max-Age = %d", o.MaxAge())
	}
	o = o.SetPath("/")
	if o.Has(URIPath) || o.Path() != "/" {
		t.Fatalf("SetPath(/) left %v", o)
	}
	o = o.Del(URIQuery)
	if o.Has(URIQuery) {
		t.Fatal("Del left Uri-Query")
	}
	if h, ok := o.String(URIHost); !ok || h != "example.org" {
		t.Fatalf("Uri-Host = %q", h)
	}
	if _, err := o.Uint(Size1); !errors.Is(err, ErrOptionNotFound) {
		t.Fatalf("Uint(absent) err = %v", err)
	}
}

func TestUnrecognizedCritical(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want OptionID
		bad  bool
	}{
		{"none", nil, 0, false},
		{"known only", Options{{URIPath, []byte("a")}, {ContentFormat, nil}}, 0, false},
		{"unknown elective ignored", Options{{100, []byte("x")}}, 0, false},
		{"unknown critical 9", Options{{9, nil}}, 9, true},
		{"unknown critical 2049", Options{{URIPath, []byte("a")}, {2049, nil}}, 2049, true},
		{"critical too long: Uri-Port 3 bytes", Options{{URIPort, []byte{1, 2, 3}}}, URIPort, true},
		{"critical too short: Uri-Host empty", Options{{URIHost, nil}}, URIHost, true},
		{"elective too long ignored: Max-Age 5 bytes", Options{{MaxAge, []byte{1, 2, 3, 4, 5}}}, 0, false},
		{"repeated non-repeatable critical: Accept", Options{{Accept, nil}, {Accept, []byte{1}}}, Accept, true},
		{"repeated repeatable critical: Uri-Path", Options{{URIPath, []byte("a")}, {URIPath, []byte("b")}}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, bad := tt.opts.UnrecognizedCritical(nil)
			if bad != tt.bad || id != tt.want {
				t.Fatalf("= %v %v, want %v %v", id, bad, tt.want, tt.bad)
			}
		})
	}
	// A receiver may restrict what it understands.
	noProxy := func(id OptionID) bool { return id != ProxyURI && id.Known() }
	if id, bad := (Options{{ProxyURI, []byte("coap://x")}}).UnrecognizedCritical(noProxy); !bad || id != ProxyURI {
		t.Fatalf("restricted = %v %v", id, bad)
	}
}

func TestMediaType(t *testing.T) {
	tests := []struct {
		mt   MediaType
		num  uint16
		name string
	}{
		{TextPlain, 0, "text/plain;charset=utf-8"},
		{AppLinkFormat, 40, "application/link-format"},
		{AppXML, 41, "application/xml"},
		{AppOctets, 42, "application/octet-stream"},
		{AppEXI, 47, "application/exi"},
		{AppJSON, 50, "application/json"},
		{AppCBOR, 60, "application/cbor"},
		{AppSenMLJSON, 110, "application/senml+json"},
		{AppSenMLCBOR, 112, "application/senml+cbor"},
	}
	for _, tt := range tests {
		if uint16(tt.mt) != tt.num || tt.mt.String() != tt.name || !tt.mt.Known() {
			t.Fatalf("%d: %q", tt.num, tt.mt.String())
		}
		if got, ok := ParseMediaType(tt.name); !ok || got != tt.mt {
			t.Fatalf("ParseMediaType(%q) = %v %v", tt.name, got, ok)
		}
	}
	if got, ok := ParseMediaType("text/plain"); !ok || got != TextPlain {
		t.Fatal("text/plain alias")
	}
	if got, ok := ParseMediaType("11542"); !ok || got != 11542 || got.String() != "11542" {
		t.Fatalf("numeric = %v", got)
	}
	if _, ok := ParseMediaType("image/png"); ok {
		t.Fatal("unknown name parsed")
	}
}

// TestParseContentFormat: the names rule files (content_format) and the
// command line (-t, --accept) accept, one table for both.
func TestParseContentFormat(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want MediaType
	}{
		{"text", TextPlain}, {"text/plain", TextPlain}, {"text/plain;charset=utf-8", TextPlain},
		{"json", AppJSON}, {"JSON", AppJSON}, {" json ", AppJSON}, {"application/json", AppJSON}, {"Application/CBOR", AppCBOR},
		{"cbor", AppCBOR}, {"senml+json", AppSenMLJSON}, {"senml", AppSenMLJSON}, {"senml+cbor", AppSenMLCBOR},
		{"link-format", AppLinkFormat}, {"link", AppLinkFormat}, {"octet-stream", AppOctets}, {"octets", AppOctets},
		{"binary", AppOctets}, {"xml", AppXML}, {"exi", AppEXI}, {"json-patch", AppJSONPatch}, {"cwt", AppCWT},
		{"cose-encrypt0", AppCoseEncrypt0}, {"application/cose; cose-type=\"cose-encrypt0\"", AppCoseEncrypt0},
		{"112", AppSenMLCBOR}, {"11542", 11542}, {"65535", 65535}, {"0", TextPlain},
	} {
		if got, ok := ParseContentFormat(tt.in); !ok || got != tt.want {
			t.Errorf("ParseContentFormat(%q) = %v, %v; want %v", tt.in, got, ok, tt.want)
		}
	}
	for _, bad := range []string{"", "yaml", "65536", "70000", "-1", "image/png", "application/"} {
		if got, ok := ParseContentFormat(bad); ok {
			t.Errorf("ParseContentFormat(%q) = %v", bad, got)
		}
	}
	names := ContentFormatNames()
	for i, n := range names {
		if mt, ok := ParseContentFormat(n); !ok || strings.Contains(n, "/") || (i > 0 && names[i-1] >= n) {
			t.Errorf("name %q (%v, %v) in %v", n, mt, ok, names)
		}
	}
	for _, mt := range []MediaType{TextPlain, AppJSON, AppCBOR, AppSenMLJSON, AppSenMLCBOR, AppLinkFormat, AppOctets, AppXML, AppEXI} {
		if back, ok := ParseContentFormat(mt.ShortName()); !ok || back != mt || mt.ShortName() == strconv.Itoa(int(mt)) {
			t.Errorf("%v: short name %q reads back as %v", uint16(mt), mt.ShortName(), back)
		}
	}
	if AppJSONPatch.ShortName() != "51" || MediaType(11542).ShortName() != "11542" {
		t.Errorf("short name of a format without one: %q %q", AppJSONPatch.ShortName(), MediaType(11542).ShortName())
	}
}
