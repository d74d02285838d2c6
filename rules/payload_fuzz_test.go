package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"strconv"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// jsonDepth is the nesting depth of a decoded JSON value: 0 for a scalar.
func jsonDepth(v any) int {
	d := 0
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			d = max(d, jsonDepth(e))
		}
		return d + 1
	case map[string]any:
		for _, e := range x {
			d = max(d, jsonDepth(e))
		}
		return d + 1
	}
	return 0
}

// sameJSON decodes two JSON documents and reports whether they hold the
// same value. Numbers compare as float64, as JSON readers see them, and
// integers beyond that range by their exact value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	return reflect.DeepEqual(readJSON(t, a), readJSON(t, b))
}

func readJSON(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return normNumbers(v)
}

func normNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if f, err := strconv.ParseFloat(string(x), 64); err == nil {
			return f
		}
		if bi, ok := new(big.Int).SetString(string(x), 10); ok {
			return bi.String()
		}
		return "number " + string(x)
	case []any:
		for i := range x {
			x[i] = normNumbers(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = normNumbers(x[k])
		}
	}
	return v
}

// FuzzJSONCBORRoundTrip checks the command direction of the payload
// mapping: a JSON document re-encoded as CBOR (RFC 8949 §6.2) reads back,
// through the ingress direction (§6.1), as the same JSON value. Bytes that
// are not JSON fail with ErrConvert.
func FuzzJSONCBORRoundTrip(f *testing.F) {
	for _, s := range []string{
		`{"on":true,"level":3}`, `[1.5,-2,"x",null]`, `18446744073709551615`,
		`-9223372036854775809`, `123456789012345678901234567890`, `1e400`, `-1e-400`,
		`0.1`, `-0`, `"\ud800"`, `{"a":1,"a":2}`, `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
		`{"a":`, `1 2`, "\"\xff\"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := JSONToCBOR(data)
		if err != nil {
			if !errors.Is(err, ErrConvert) {
				t.Fatalf("error %v does not wrap ErrConvert", err)
			}
			var v any
			if json.Unmarshal(data, &v) == nil {
				t.Fatalf("%q: JSON that Go reads was refused: %v", data, err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("%q: encoded as %x, but it is not JSON", data, c)
		}
		v := readJSON(t, data)
		back, err := ToJSON(Payload{Data: c, Format: message.AppCBOR, HasFormat: true}, testNow)
		if err != nil {
			if errors.Is(err, ErrConvert) && jsonDepth(v) > cborMaxDepth {
				return // deeper than the bridge reads back; the device may
			}
			t.Fatalf("%q: CBOR %x does not read back: %v", data, c, err)
		}
		if !sameJSON(t, data, back) {
			t.Fatalf("%q: CBOR %x reads back as %s", data, c, back)
		}
	})
}

// FuzzCBORJSONRoundTrip checks the ingress direction: CBOR that converts to
// JSON (RFC 8949 §6.1) converts back to CBOR and again to the same JSON, so
// the mapping is stable after one pass.
func FuzzCBORJSONRoundTrip(f *testing.F) {
	for _, h := range []string{
		"a2626f6ef5656c6576656c03",   // {"on":true,"level":3}
		"84f93e002161 78f6",          // [1.5,-2,"x",null]
		"c249010000000000000000",     // bignum 2^64
		"c34a01000000000000000000",   // negative bignum
		"a201610161 6101",            // keys 1 and "1" collide
		"fb7ff0000000000000",         // +Inf becomes null
		"d818 42 0102",               // tag 24 over bytes
		"c1 1a 6553f100",             // epoch time tag
		"9f 01 82 02 03 ff",          // indefinite array
		"bf 61 61 01 ff",             // indefinite map
		"f8 20",                      // simple value 32
		"a1 f5 01",                   // bool key
		"a1 fb 3ff8000000000000 01",  // float key
		"a1 43 010203 01",            // byte-string key
		"c2 58 40 " + repeatHex(64),  // 512-bit bignum
		"c2 58 81 " + repeatHex(129), // bignum beyond float64
	} {
		f.Add(unhex(f, h))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j1, err := ToJSON(Payload{Data: data, Format: message.AppCBOR, HasFormat: true}, testNow)
		if err != nil {
			return // FuzzToJSON checks the errors
		}
		c, err := JSONToCBOR(j1)
		if err != nil {
			t.Fatalf("CBOR %x gave JSON %s, which does not encode: %v", data, j1, err)
		}
		j2, err := ToJSON(Payload{Data: c, Format: message.AppCBOR, HasFormat: true}, testNow)
		if err != nil {
			t.Fatalf("CBOR %x → %s → %x does not read back: %v", data, j1, c, err)
		}
		if !sameJSON(t, j1, j2) {
			t.Fatalf("CBOR %x → %s → %x → %s", data, j1, c, j2)
		}
	})
}

func repeatHex(n int) string {
	b := make([]byte, 0, 2*n)
	for range n {
		b = append(b, "ff"...)
	}
	return string(b)
}
