package bridge

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// TestCommandResultJSONAsEncodingJSON: a result's JSON is byte for byte
// what encoding/json makes of it, for results with every field set or
// empty, strings needing every kind of escape (HTML characters, control
// characters, invalid UTF-8, U+2028), payloads to compact, and RTTs of
// every magnitude.
func TestCommandResultJSONAsEncodingJSON(t *testing.T) {
	texts := []string{"", "ok", "dev-1", "<a href='x'>&amp;</a>", "line\u2028para\u2029", "\x00\x01\x1f\b\f\n\r\t\x7f",
		`quote " back \ slash`, "\xff\xfe invalid", "truncated \xe2\x80", "é 日本 🙂", "/cmd/+/#"}
	payloads := [][]byte{nil, []byte(`{"a": 1, "b" : [1, 2]}`), []byte(`"<x>"`), []byte(`[1,2]`), []byte(`{"s":"` + "\u2028" + `"}`),
		[]byte("  42\n"), []byte(`true`), []byte(`{"html":"a&b"}`), []byte(`{"k":"a\\\" b","z":"\\\\"}`), []byte(`{"k":"a\\\" b" , "z":1}`)}
	for _, s := range texts {
		payloads = append(payloads, appendJSONString(nil, s))
	}
	rtts := []float64{0, 0.001, 1.234, 1e-7, -2e-9, 5e-324, 1e21, 123456789.123, 999.999, 1e20}
	cfs := []*int{nil, new(int), ptr(50), ptr(65000)}
	pick := func(r *rand.Rand) string { return texts[r.IntN(len(texts))] }
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		res := commandResult{
			Status: pick(r), Rule: pick(r), Topic: pick(r), Device: pick(r), Method: pick(r), URL: pick(r),
			Code: pick(r), CodeName: pick(r), ContentFormat: cfs[r.IntN(len(cfs))],
			Payload: payloads[r.IntN(len(payloads))], PayloadBase64: pick(r), RTTMillis: rtts[r.IntN(len(rtts))],
			Error: pick(r), Position: r.IntN(3), ExpiresAt: pick(r),
		}
		want, err := json.Marshal(&res)
		if err != nil {
			t.Fatal(err)
		}
		if got := res.marshal(); !bytes.Equal(got, want) {
			t.Fatalf("result %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// FuzzCommandResultJSON: for any strings, JSON payload and RTT, a result's
// JSON is what encoding/json makes of it.
func FuzzCommandResultJSON(f *testing.F) {
	f.Add("ok", "dev\u2028<1>", []byte(`{"a": [1, "<&>"]}`), 1.5)
	f.Add("error", "\xff", []byte(`"x"`), 1e-9)
	f.Add("", "", []byte(nil), 0.0)
	f.Fuzz(func(t *testing.T, status, text string, payload []byte, rtt float64) {
		res := commandResult{Status: status, Device: text, Error: text, RTTMillis: rtt}
		if json.Valid(payload) {
			res.Payload = payload
		}
		want, err := json.Marshal(&res)
		if err != nil {
			want = nil // NaN or infinite RTT
		}
		if got := res.marshal(); !bytes.Equal(got, want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}
