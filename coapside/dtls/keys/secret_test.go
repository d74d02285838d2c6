package keys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	tests := []struct {
		in      string
		want    []byte
		wantErr string
	}{
		{in: "hex:00112233", want: []byte{0x00, 0x11, 0x22, 0x33}},
		{in: "hex:ABCDEF", want: []byte{0xab, 0xcd, 0xef}},
		// Both spellings of base64: with the "=" padding and without.
		{in: "base64:ABEiMw==", want: []byte{0x00, 0x11, 0x22, 0x33}},
		{in: "base64:ABEiMw", want: []byte{0x00, 0x11, 0x22, 0x33}},
		{in: "base64:ABEiM0RVZneImaq7zN3u/w==", want: []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}},
		{in: "base64:ABEiM0RVZneImaq7zN3u/w", want: []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}},
		{in: "secretPSK", want: []byte("secretPSK")},
		{in: "hexagon", want: []byte("hexagon")},
		{in: "hex:0", wantErr: `after "hex:" want an even number of hex digits`},
		{in: "hex:zz", wantErr: `after "hex:" want an even number of hex digits`},
		{in: "hex:", wantErr: "empty key"},
		{in: "base64:!!!", wantErr: `after "base64:" want standard base64`},
		{in: "base64:ABEiMw=", wantErr: `after "base64:" want standard base64`},
		{in: "base64:", wantErr: "empty key"},
		{in: "", wantErr: "empty key"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			k, err := ParseKey(tt.in)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseKey(%q) err = %v, want ErrKey saying %q", tt.in, err, tt.wantErr)
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

// TestParseKeyErrorsDoNotQuoteTheKey: a key that does not parse is reported
// in logs and in bridge check; the message must not carry any of it.
func TestParseKeyErrorsDoNotQuoteTheKey(t *testing.T) {
	for _, in := range []string{"hex:7zq9", "base64:Q*kx", "hex:abc"} {
		_, err := ParseKey(in)
		if err == nil {
			t.Fatalf("ParseKey(%q) accepted", in)
		}
		body := in[strings.IndexByte(in, ':')+1:]
		// "U+007A 'z'" is how the hex decoder names a bad byte; the base64
		// decoder gives the offset of one.
		if msg := err.Error(); strings.Contains(msg, body) || strings.Contains(msg, "U+") || strings.Contains(msg, "illegal") {
			t.Fatalf("ParseKey(%q) error quotes the key: %v", in, err)
		}
	}
}

func TestSecretRedacts(t *testing.T) {
	k, err := ParseKey("hex:deadbeefcafe")
	if err != nil {
		t.Fatal(err)
	}
	type holder struct {
		Name string
		K    Secret
	}
	var logBuf bytes.Buffer
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("x", "key", k, "holder", holder{"h", k})
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "key", k, slog.Any("any", k))
	js, _ := json.Marshal(holder{"h", k})
	// A leak in decimal reads "222 173 190 ..." (%d of the bytes); the
	// timestamps in the log lines may hold "222" on their own.
	outs := []string{
		k.String(), fmt.Sprint(k), k.GoString(),
		fmt.Sprintf("%v", k), fmt.Sprintf("%+v", k), fmt.Sprintf("%#v", k), fmt.Sprintf("%s", k),
		fmt.Sprintf("%x", k), fmt.Sprintf("%X", k), fmt.Sprintf("%q", k), fmt.Sprintf("%d", k),
		fmt.Sprintf("%v", &k), fmt.Sprintf("%+v", holder{"h", k}), fmt.Sprintf("%#v", holder{"h", k}),
		logBuf.String(), string(js), fmt.Errorf("wrap: %v", k).Error(),
	}
	for _, o := range outs {
		if strings.Contains(strings.ToLower(o), "deadbeef") || strings.Contains(o, "\xde\xad") || strings.Contains(o, "222 173") {
			t.Fatalf("secret leaked: %q", o)
		}
		if !strings.Contains(o, redacted) {
			t.Fatalf("output %q does not say %s", o, redacted)
		}
	}
	if !k.Equal(Secret("\xde\xad\xbe\xef\xca\xfe")) || k.Equal(NewSecret([]byte{0xde, 0xad, 0xbe, 0xef})) {
		t.Fatal("Equal is wrong")
	}
	if k.Len() != 6 || k.IsZero() || string(k.Bytes()) != "\xde\xad\xbe\xef\xca\xfe" || k.Reveal() != "\xde\xad\xbe\xef\xca\xfe" {
		t.Fatal("value lost")
	}
	b := k.Bytes()
	b[0] = 0
	if k.Bytes()[0] != 0xde {
		t.Fatal("Bytes returned the Secret's own storage")
	}
}

// TestPasswordSecret: the MQTT password and password hashes are Secrets
// too; an empty one prints empty, so an unset password reads as unset.
func TestPasswordSecret(t *testing.T) {
	const pw = "hunter2-very-secret"
	s := Secret(pw)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("connect", "password", s)
	out := logs.String() + fmt.Sprint(s) + fmt.Sprintf("%v %+v %#v %s", s, s, s, s)
	if strings.Contains(out, pw) {
		t.Fatalf("secret leaked: %s", out)
	}
	if s.Reveal() != pw {
		t.Fatal("Reveal lost the value")
	}
	var empty Secret
	if empty.String() != "" || fmt.Sprintf("%v|%s|%#v", empty, empty, empty) != "||" || !empty.IsZero() {
		t.Fatalf("empty secret should print empty: %q", fmt.Sprintf("%v|%s|%#v", empty, empty, empty))
	}
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"hex:00ff", "base64:AAEC", "base64:AAE", "base64:AAE=", "plain", "hex:", ""} {
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
		if strings.Contains(fmt.Sprintf("%v %s %x %d", k, k, k, k), fmt.Sprintf("%x", k.Bytes())) && k.Len() > 2 {
			t.Fatal("key bytes visible in formatting")
		}
	})
}
