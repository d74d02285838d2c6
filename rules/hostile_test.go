package rules

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestHostileInputs loads inputs built to exhaust time or memory. Each must
// fail with a short, positioned report, quickly.
func TestHostileInputs(t *testing.T) {
	repeat := func(s string, size int) string { return strings.Repeat(s, size/len(s)) }
	garbage := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range garbage {
		garbage[i] = byte(r.IntN(256))
	}
	tests := []struct {
		name string
		data string
		want string // substring of the first message
	}{
		{"too large", repeat("# padding\n", MaxFileSize+10), "larger than the 4194304 byte limit"},
		{"identical rules", repeat("[[ingress]]\nname=\"a\"\npath=\"/a/{x}\"\ntopic=\"a\"\n", MaxFileSize-100), "duplicate rule name"},
		{"nested arrays", "[[ingress]]\nmethods = " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n", "nested more than"},
		{"deep table name", "[" + strings.Repeat("a.", 200000) + "a]\n", "unknown section"},
		{"long key", "[[ingress]]\n" + strings.Repeat("k", 1<<20) + " = 1\n", "unknown key"},
		{"long value", "[[device]]\nname = \"d\"\nurl = \"" + strings.Repeat("x", 1<<20) + "\"\n", "missing scheme"},
		{"binary garbage", string(garbage), "not UTF-8"},
		{"NUL bytes", "[[ingress]]\nname = \"a\x00\"\n", "TOML syntax error"},
		{"long array", "[[observe]]\nname = \"o\"\npaths = [" + strings.Repeat("\"/a\",", maxArrayLen+1) + "]\n", "array has more than 100000 elements"},
		{"many keys", "[[ingress]]\n" + repeat("x = 1\n", 1<<20), "duplicate key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := Parse(Source{Name: "hostile.toml", Data: []byte(tc.data)})
			elapsed := time.Since(start)
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("err = %v, want Errors", err)
			}
			if len(es) > MaxErrors+1 {
				t.Errorf("%d entries, more than the cap", len(es))
			}
			for _, e := range es {
				if len(e.Msg) > maxMsgLen+3 {
					t.Fatalf("message of %d bytes", len(e.Msg))
				}
			}
			found := false
			for _, e := range es {
				found = found || strings.Contains(e.Msg, tc.want)
			}
			if !found {
				t.Errorf("no message contains %q; first is %q", tc.want, es[0].Error())
			}
			// Generous: a shared, loaded CI machine under -race.
			if elapsed > 20*time.Second {
				t.Errorf("took %v", elapsed)
			}
			t.Logf("%d entries in %v", len(es), elapsed)
		})
	}
}
