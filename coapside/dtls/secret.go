package dtls

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
)

// redacted is what a Secret prints as, whatever the verb.
const redacted = "[redacted]"

// Secret holds key material (a pre-shared key). It never prints its bytes:
// String, GoString, Format and LogValue all redact, so a Secret can be logged
// or wrapped in an error without leaking.
type Secret struct {
	b []byte
}

// NewSecret copies b into a Secret.
func NewSecret(b []byte) Secret {
	return Secret{b: append([]byte(nil), b...)}
}

// ParseKey parses the key syntax of psk_file and device entries:
//
//	"hex:00112233..."    hexadecimal bytes
//	"base64:ABEiMw=="    standard base64 (padding optional)
//	anything else        the string's bytes as they are
//
// An empty key is an error.
func ParseKey(s string) (Secret, error) {
	var b []byte
	switch {
	case strings.HasPrefix(s, "hex:"):
		d, err := hex.DecodeString(strings.TrimPrefix(s, "hex:"))
		if err != nil {
			return Secret{}, fmt.Errorf("%w: hex: %w", ErrKey, err)
		}
		b = d
	case strings.HasPrefix(s, "base64:"):
		enc := strings.TrimPrefix(s, "base64:")
		d, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			d, err = base64.RawStdEncoding.DecodeString(enc)
		}
		if err != nil {
			return Secret{}, fmt.Errorf("%w: base64: %w", ErrKey, err)
		}
		b = d
	default:
		b = []byte(s)
	}
	if len(b) == 0 {
		return Secret{}, fmt.Errorf("%w: empty key", ErrKey)
	}
	return Secret{b: b}, nil
}

// Bytes returns a copy of the key bytes.
func (s Secret) Bytes() []byte { return append([]byte(nil), s.b...) }

// Len returns the key length in bytes.
func (s Secret) Len() int { return len(s.b) }

// IsZero reports whether the Secret holds no key.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// Equal compares two secrets in constant time.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare(s.b, o.b) == 1
}

// String implements fmt.Stringer and redacts.
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer and redacts.
func (s Secret) GoString() string { return "dtls.Secret{" + redacted + "}" }

// Format implements fmt.Formatter so that every verb (%x, %v, %+v, %q, ...)
// redacts.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(redacted))
}

// LogValue implements slog.LogValuer and redacts.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText implements encoding.TextMarshaler and redacts, so a Secret in a
// config dump or JSON log never carries the key.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
