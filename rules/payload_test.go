package rules

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

var testNow = time.Unix(1_700_000_000, 0)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(stripSpaces(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestToJSON(t *testing.T) {
	tests := []struct {
		name string
		p    Payload
		want string
		err  error
	}{
		{"json passes", Payload{Data: []byte(`{"t": 21.5}`), Format: message.AppJSON, HasFormat: true}, `{"t": 21.5}`, nil},
		{"bad json", Payload{Data: []byte(`{"t":`), Format: message.AppJSON, HasFormat: true}, "", ErrConvert},
		{"text number", Payload{Data: []byte("21.50"), Format: message.TextPlain, HasFormat: true}, `21.50`, nil},
		{"text number spaces", Payload{Data: []byte(" -3\n"), Format: message.TextPlain, HasFormat: true}, `-3`, nil},
		{"text not json number", Payload{Data: []byte("+5"), Format: message.TextPlain, HasFormat: true}, `5`, nil},
		{"text string", Payload{Data: []byte(`on "now"`), Format: message.TextPlain, HasFormat: true}, `"on \"now\""`, nil},
		{"text inf stays text", Payload{Data: []byte("inf"), Format: message.TextPlain, HasFormat: true}, `"inf"`, nil},
		{"text not utf8", Payload{Data: []byte{0xff}, Format: message.TextPlain, HasFormat: true}, "", ErrConvert},
		{"no format json", Payload{Data: []byte(`[1,2]`)}, `[1,2]`, nil},
		{"no format text", Payload{Data: []byte(`hello`)}, `"hello"`, nil},
		{"no format binary", Payload{Data: []byte{0x80, 0xff}}, "", ErrConvert},
		{"octet stream", Payload{Data: []byte{1, 2}, Format: message.AppOctets, HasFormat: true}, "", ErrContentFormat},
		{"link format", Payload{Data: []byte(`</t>;rt="temp"`), Format: message.AppLinkFormat, HasFormat: true}, `"\u003c/t\u003e;rt=\"temp\""`, nil},
		// {"a": 1, "b": [true, null]}
		{"cbor map", Payload{Data: unhex(t, "a26161016162f5"), Format: message.AppCBOR, HasFormat: true}, `{"a":1,"b":true}`, nil},
		// {1: h'0102', -2: 1.5}: int keys become strings, bytes base64url
		{"cbor int keys bytes", Payload{Data: unhex(t, "a2 01 420102 21 f93e00"), Format: message.AppCBOR, HasFormat: true}, `{"-2":1.5,"1":"AQI"}`, nil},
		// NaN (half float 0x7e00) becomes null, RFC 8949 §6.1
		{"cbor nan", Payload{Data: unhex(t, "f97e00"), Format: message.AppCBOR, HasFormat: true}, `null`, nil},
		// 1(1700000000): epoch time tag
		{"cbor time tag", Payload{Data: unhex(t, "c11a6553f100"), Format: message.AppCBOR, HasFormat: true}, `"2023-11-14T22:13:20Z"`, nil},
		// tag 2 bignum 2^64
		{"cbor bignum", Payload{Data: unhex(t, "c249010000000000000000"), Format: message.AppCBOR, HasFormat: true}, `18446744073709551616`, nil},
		{"cbor truncated", Payload{Data: unhex(t, "a26161"), Format: message.AppCBOR, HasFormat: true}, "", ErrConvert},
		{"cbor trailing", Payload{Data: unhex(t, "0101"), Format: message.AppCBOR, HasFormat: true}, "", ErrConvert},
		// {"a":1,"a":2}
		{"cbor dup keys", Payload{Data: unhex(t, "a2616101616102"), Format: message.AppCBOR, HasFormat: true}, "", ErrConvert},
		// {1: 1, "1": 2} collide as message.AppJSON keys
		{"cbor key collision", Payload{Data: unhex(t, "a201016131"+"02"), Format: message.AppCBOR, HasFormat: true}, "", ErrConvert},
		{"senml json", Payload{Data: []byte(`[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.276020076e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},{"n":"current","t":-5,"v":1.2}]`), Format: message.AppSenMLJSON, HasFormat: true},
			`[{"n":"urn:dev:ow:10e2073a01080063:voltage","t":1276020076,"u":"V","v":120.1},{"n":"urn:dev:ow:10e2073a01080063:current","t":1276020071,"u":"A","v":1.2}]`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ToJSON(tc.p, testNow)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Fatalf("output is not JSON: %s", got)
			}
		})
	}
}

func TestResolveSenML(t *testing.T) {
	tests := []struct {
		name string
		p    Payload
		want string
		err  string
	}{
		{"relative time from now", Payload{Data: []byte(`[{"n":"temp","v":21},{"n":"temp","t":-60,"v":20}]`), Format: message.AppSenMLJSON},
			`[{"n":"temp","t":1700000000,"v":21},{"n":"temp","t":1699999940,"v":20}]`, ""},
		{"base value and sum", Payload{Data: []byte(`[{"bn":"d/","bv":100,"bs":10,"n":"a","v":1,"s":2},{"n":"b","vs":"x"},{"n":"c","vb":true},{"n":"d","vd":"AQI"}]`), Format: message.AppSenMLJSON},
			`[{"n":"d/a","s":12,"t":1700000000,"v":101},{"n":"d/b","t":1700000000,"vs":"x"},{"n":"d/c","t":1700000000,"vb":true},{"n":"d/d","t":1700000000,"vd":"AQI"}]`, ""},
		{"extension label kept", Payload{Data: []byte(`[{"n":"a","v":1,"foo":{"x":[1]}}]`), Format: message.AppSenMLJSON},
			`[{"foo":{"x":[1]},"n":"a","t":1700000000,"v":1}]`, ""},
		{"must understand", Payload{Data: []byte(`[{"n":"a","v":1,"foo_":1}]`), Format: message.AppSenMLJSON}, "", "must be understood"},
		{"two values", Payload{Data: []byte(`[{"n":"a","v":1,"vs":"x"}]`), Format: message.AppSenMLJSON}, "", "2 value fields"},
		{"no value", Payload{Data: []byte(`[{"n":"a"}]`), Format: message.AppSenMLJSON}, "", "no value"},
		{"no name", Payload{Data: []byte(`[{"v":1}]`), Format: message.AppSenMLJSON}, "", "no name"},
		{"bad name", Payload{Data: []byte(`[{"n":"-a","v":1}]`), Format: message.AppSenMLJSON}, "", "bad name"},
		{"bad name char", Payload{Data: []byte(`[{"n":"a b","v":1}]`), Format: message.AppSenMLJSON}, "", "bad name"},
		{"new version", Payload{Data: []byte(`[{"bver":11,"n":"a","v":1}]`), Format: message.AppSenMLJSON}, "", "newer"},
		{"mixed versions", Payload{Data: []byte(`[{"bver":5,"n":"a","v":1},{"bver":6,"n":"a","v":1}]`), Format: message.AppSenMLJSON}, "", "differs"},
		{"wrong type", Payload{Data: []byte(`[{"n":"a","v":"1"}]`), Format: message.AppSenMLJSON}, "", "not a number"},
		{"not a pack", Payload{Data: []byte(`{"n":"a","v":1}`), Format: message.AppSenMLJSON}, "", "senml+json"},
		// [{-2: "d/", 0: "t", 2: 21, 6: 1700000000}]
		{"cbor labels", Payload{Data: unhex(t, "81a4216264 2f00617402150 61a6553f100"), Format: message.AppSenMLCBOR},
			`[{"n":"d/t","t":1700000000,"v":21}]`, ""},
		// [{0: "b", 8: h'0102'}]
		{"cbor data value", Payload{Data: unhex(t, "81a20061620842 0102"), Format: message.AppSenMLCBOR},
			`[{"n":"b","t":1700000000,"vd":"AQI"}]`, ""},
		// [{0: "b", 99: 1}]
		{"cbor unknown label", Payload{Data: unhex(t, "81a2006162186301"), Format: message.AppSenMLCBOR}, "", "unknown label"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.HasFormat = true
			got, err := ToJSON(tc.p, testNow)
			if tc.err != "" {
				if !errors.Is(err, ErrConvert) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want ErrConvert with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestJSONToCBOR(t *testing.T) {
	tests := []struct {
		in   string
		want string // hex
		err  bool
	}{
		{`{"on":true,"level":3}`, "a262 6f6ef5 656c6576656c03", false},
		{`[1.5,-2,"x",null]`, "84 f93e00 21 6178 f6", false},
		{`18446744073709551615`, "1bffffffffffffffff", false},
		// RFC 8949 §3.4.3: integers beyond 64 bits become bignums, not floats.
		{`18446744073709551616`, "c249010000000000000000", false},
		{`-18446744073709551617`, "c349010000000000000000", false},
		// Beyond the float64 range: refused, not sent as an infinity.
		{`1e400`, "", true},
		{`[-1.5e309]`, "", true},
		{`{"a":`, "", true},
		{`1 2`, "", true},
		{`0A0`, "", true}, // not JSON after the first value
		{`{"on":true}x`, "", true},
		{" [1] \n", "8101", false},
	}
	for _, tc := range tests {
		got, err := JSONToCBOR([]byte(tc.in))
		if tc.err {
			if !errors.Is(err, ErrConvert) {
				t.Errorf("%s: err = %v", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if want := unhex(t, stripSpaces(tc.want)); string(got) != string(want) {
			t.Errorf("%s: got %x, want %x", tc.in, got, want)
		}
		// And back: message.AppCBOR → message.AppJSON gives the same document.
		back, err := ToJSON(Payload{Data: got, Format: message.AppCBOR, HasFormat: true}, testNow)
		if err != nil {
			t.Errorf("%s: back: %v", tc.in, err)
			continue
		}
		var a, b any
		_ = json.Unmarshal([]byte(tc.in), &a)
		_ = json.Unmarshal(back, &b)
		if ja, _ := json.Marshal(a); string(ja) != func() string { jb, _ := json.Marshal(b); return string(jb) }() {
			t.Errorf("%s: round trip gave %s", tc.in, back)
		}
	}
}

func stripSpaces(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' {
			out = append(out, s[i])
		}
	}
	return string(out)
}

func FuzzToJSON(f *testing.F) {
	f.Add([]byte(`[{"bn":"a/","n":"b","v":1}]`), uint16(message.AppSenMLJSON))
	f.Add([]byte{0x81, 0xa2, 0x00, 0x61, 0x62, 0x02, 0x01}, uint16(message.AppSenMLCBOR))
	f.Add([]byte{0xa1, 0x61, 0x61, 0x9f, 0x01, 0xff}, uint16(message.AppCBOR))
	f.Add([]byte{0xd8, 0x18, 0x42, 0x01, 0x02}, uint16(message.AppCBOR))
	f.Add([]byte("12.5"), uint16(message.TextPlain))
	f.Fuzz(func(t *testing.T, data []byte, cf uint16) {
		out, err := ToJSON(Payload{Data: data, Format: message.MediaType(cf), HasFormat: true}, testNow)
		if err != nil {
			if !errors.Is(err, ErrConvert) && !errors.Is(err, ErrContentFormat) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("not JSON: %q", out)
		}
	})
}
