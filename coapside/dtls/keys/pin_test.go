package keys

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
)

func TestParsePin(t *testing.T) {
	c := &x509.Certificate{RawSubjectPublicKeyInfo: []byte("spki")}
	p := PinOf(c)
	if p != sha256.Sum256([]byte("spki")) {
		t.Fatal("PinOf is not the SHA-256 of the SPKI")
	}
	for _, s := range []string{p.String(), strings.TrimPrefix(p.String(), "sha256:"), strings.ToUpper(strings.TrimPrefix(p.String(), "sha256:"))} {
		if q, err := ParsePin(s); err != nil || q != p {
			t.Fatalf("ParsePin(%q) = %v, %v", s, q, err)
		}
	}
	for _, bad := range []string{"sha256:00", "sha256:zz", "", "sha1:" + strings.TrimPrefix(p.String(), "sha256:")} {
		if _, err := ParsePin(bad); !errors.Is(err, ErrPin) {
			t.Errorf("ParsePin(%q) err = %v, want ErrPin", bad, err)
		}
	}
}

func FuzzParsePin(f *testing.F) {
	f.Add("sha256:" + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	f.Add("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	f.Add("sha256:zz")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePin(s)
		if err != nil {
			if !errors.Is(err, ErrPin) {
				t.Fatalf("error not wrapped: %v", err)
			}
			return
		}
		q, err := ParsePin(p.String())
		if err != nil || q != p {
			t.Fatalf("round trip of %q: %v %v", s, q, err)
		}
	})
}
