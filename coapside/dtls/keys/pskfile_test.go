package keys

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestParsePSKFile(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string // identity -> hex of key
		wantErr string
	}{
		{
			name: "ok",
			in: `# devices
[[psk]]
identity = "greenhouse-1"
key      = "hex:00112233445566778899aabbccddeeff"

[[psk]]
identity = "greenhouse-2"
key = "base64:ABEiMw=="

[[psk]]
identity = "greenhouse-3"
key = "base64:ABEiMw"

[[psk]]
identity = "plain"
key = "secretPSK"
`,
			want: map[string]string{
				"greenhouse-1": "00112233445566778899aabbccddeeff",
				"greenhouse-2": "00112233",
				"greenhouse-3": "00112233",
				"plain":        "7365637265745053" + "4b", // "secretPSK"
			},
		},
		{name: "empty file", in: "", want: map[string]string{}},
		{name: "toml syntax", in: "[[psk]]\nidentity = \n", wantErr: "f.toml:2:"},
		{name: "duplicate", in: "[[psk]]\nidentity=\"a\"\nkey=\"x\"\n\n[[psk]]\nidentity=\"a\"\nkey=\"y\"\n", wantErr: `f.toml:5: duplicate identity "a"`},
		{name: "bad hex", in: "[[psk]]\nidentity=\"a\"\nkey=\"hex:zz\"\n", wantErr: `f.toml:1: identity "a": keys: bad key: after "hex:"`},
		{name: "bad base64", in: "\n[[psk]]\nidentity=\"a\"\nkey=\"base64:ABEiMw=\"\n", wantErr: `f.toml:2: identity "a": keys: bad key: after "base64:"`},
		{name: "no identity", in: "[[psk]]\nkey=\"x\"\n", wantErr: "f.toml:1: psk entry without identity"},
		{name: "no key", in: "[[psk]]\nidentity=\"a\"\n", wantErr: `f.toml:1: identity "a" has no key`},
		{name: "unknown key", in: "[[psk]]\nidentity=\"a\"\nkye=\"x\"\n", wantErr: `f.toml:3: unknown key "psk.kye"`},
		{name: "long identity", in: "[[psk]]\nidentity=\"" + strings.Repeat("x", MaxIdentityLen+1) + "\"\nkey=\"k\"\n", wantErr: "longer than"},
		{name: "wrong type", in: "[[psk]]\nidentity=1\nkey=\"k\"\n", wantErr: "f.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePSKFile("f.toml", []byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrPSKFile) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrPSKFile containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d entries, want %d", len(got), len(tt.want))
			}
			for id, hexKey := range tt.want {
				k, ok := got[id]
				if !ok {
					t.Fatalf("identity %q missing", id)
				}
				if fmt.Sprintf("%x", k.Bytes()) != hexKey {
					t.Fatalf("%s: key %x, want %s", id, k.Bytes(), hexKey)
				}
			}
		})
	}
}

func FuzzParsePSKFile(f *testing.F) {
	f.Add([]byte("[[psk]]\nidentity = \"a\"\nkey = \"hex:0011\"\n"))
	f.Add([]byte("[[psk]]\nidentity = \"a\"\nkey = \"base64:AAEC\"\n[[psk]]\nidentity = \"a\"\nkey = \"x\"\n"))
	f.Add([]byte("psk = [{identity = \"a\", key = \"k\"}]"))
	f.Add([]byte("[[psk]]\nidentity = \"\\u0000\"\nkey = \"hex:\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParsePSKFile("fuzz.toml", data)
		if err != nil {
			if !errors.Is(err, ErrPSKFile) {
				t.Fatalf("error not wrapped in ErrPSKFile: %v", err)
			}
			return
		}
		for id, k := range m {
			if id == "" || len(id) > MaxIdentityLen || k.IsZero() {
				t.Fatalf("accepted bad entry %q (key len %d)", id, k.Len())
			}
		}
	})
}

// TestPSKFileExample reads the example psk_file: each key syntax once.
func TestPSKFileExample(t *testing.T) {
	data, err := os.ReadFile("testdata/psk.toml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePSKFile("testdata/psk.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"greenhouse-1": "00112233445566778899aabbccddeeff", "greenhouse-2": "00112233445566778899aabbccddeeff", "lab-sensor": fmt.Sprintf("%x", "secretPSK")}
	if len(got) != len(want) {
		t.Fatalf("%d keys, want %d", len(got), len(want))
	}
	for id, k := range got {
		if fmt.Sprintf("%x", k.Bytes()) != want[id] {
			t.Errorf("%s: key %x", id, k.Bytes())
		}
	}
}
