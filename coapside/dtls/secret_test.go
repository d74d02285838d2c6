package dtls

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	tests := []struct {
		in      string
		want    []byte
		wantErr bool
	}{
		{in: "hex:00112233", want: []byte{0x00, 0x11, 0x22, 0x33}},
		{in: "hex:ABCDEF", want: []byte{0xab, 0xcd, 0xef}},
		{in: "base64:ABEiMw==", want: []byte{0x00, 0x11, 0x22, 0x33}},
		{in: "base64:ABEiMw", want: []byte{0x00, 0x11, 0x22, 0x33}},
		{in: "secretPSK", want: []byte("secretPSK")},
		{in: "hexagon", want: []byte("hexagon")},
		{in: "hex:0", wantErr: true},
		{in: "hex:zz", wantErr: true},
		{in: "hex:", wantErr: true},
		{in: "base64:!!!", wantErr: true},
		{in: "base64:", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			k, err := ParseKey(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrKey) {
					t.Fatalf("ParseKey(%q) err = %v, want ErrKey", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(k.Bytes(), tt.want) {
				t.Fatalf("ParseKey(%q) = %x, want %x", tt.in, k.Bytes(), tt.want)
			}
		})
	}
}

func TestSecretRedacts(t *testing.T) {
	k := mustKey(t, "hex:deadbeefcafe")
	var logBuf bytes.Buffer
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("x", "key", k)
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "key", k)
	js, _ := json.Marshal(struct{ K Secret }{k})
	outs := []string{
		k.String(), fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %x %X %q", k, k, k, k, k, k, k),
		fmt.Sprintf("%v", &k), logBuf.String(), string(js),
		fmt.Errorf("wrap: %v", k).Error(),
	}
	for _, o := range outs {
		if strings.Contains(strings.ToLower(o), "deadbeef") || strings.Contains(o, "\xde\xad") {
			t.Fatalf("secret leaked: %q", o)
		}
		if !strings.Contains(o, redacted) {
			t.Fatalf("output %q does not say %s", o, redacted)
		}
	}
	if !k.Equal(mustKey(t, "hex:DEADBEEFCAFE")) || k.Equal(mustKey(t, "hex:deadbeef")) {
		t.Fatal("Equal is wrong")
	}
}

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
identity = "plain"
key = "secretPSK"
`,
			want: map[string]string{
				"greenhouse-1": "00112233445566778899aabbccddeeff",
				"greenhouse-2": "00112233",
				"plain":        "7365637265745053" + "4b", // "secretPSK"
			},
		},
		{name: "empty file", in: "", want: map[string]string{}},
		{name: "toml syntax", in: "[[psk]]\nidentity = \n", wantErr: "f.toml:2:"},
		{name: "duplicate", in: "[[psk]]\nidentity=\"a\"\nkey=\"x\"\n\n[[psk]]\nidentity=\"a\"\nkey=\"y\"\n", wantErr: `f.toml:5: duplicate identity "a"`},
		{name: "bad hex", in: "[[psk]]\nidentity=\"a\"\nkey=\"hex:zz\"\n", wantErr: `f.toml:1: identity "a"`},
		{name: "no identity", in: "[[psk]]\nkey=\"x\"\n", wantErr: "f.toml:1: psk entry without identity"},
		{name: "no key", in: "[[psk]]\nidentity=\"a\"\n", wantErr: `f.toml:1: identity "a" has no key`},
		{name: "unknown key", in: "[[psk]]\nidentity=\"a\"\nkye=\"x\"\n", wantErr: `unknown key "psk.kye"`},
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

func TestPSKStoreReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "psk.toml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("[[psk]]\nidentity=\"a\"\nkey=\"one\"\n")
	s, err := LoadPSKFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := s.Lookup("a"); !ok || string(k.Bytes()) != "one" {
		t.Fatal("a not loaded")
	}
	write("[[psk]]\nidentity=\"b\"\nkey=\"two\"\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Lookup("a"); ok {
		t.Fatal("a still present after reload")
	}
	if k, ok := s.Lookup("b"); !ok || string(k.Bytes()) != "two" {
		t.Fatal("b not loaded")
	}
	write("[[psk]]\nidentity=\"c\"\nkey=\"hex:nothex\"\n")
	if err := s.Reload(); err == nil {
		t.Fatal("bad file reloaded without error")
	}
	if _, ok := s.Lookup("b"); !ok || s.Len() != 1 {
		t.Fatal("failed reload replaced the table")
	}
	if _, err := LoadPSKFile(filepath.Join(t.TempDir(), "missing.toml")); !errors.Is(err, ErrPSKFile) {
		t.Fatalf("missing file: %v", err)
	}
	if err := NewPSKStore(nil).Reload(); !errors.Is(err, ErrPSKFile) {
		t.Fatalf("Reload of in-memory store: %v", err)
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

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"hex:00ff", "base64:AAEC", "base64:AAE", "plain", "hex:", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			if !errors.Is(err, ErrKey) {
				t.Fatalf("error not wrapped: %v", err)
			}
			return
		}
		if k.IsZero() {
			t.Fatal("accepted empty key")
		}
		if strings.Contains(fmt.Sprintf("%v %s %x", k, k, k), fmt.Sprintf("%x", k.Bytes())) && k.Len() > 2 {
			t.Fatal("key bytes visible in formatting")
		}
	})
}
