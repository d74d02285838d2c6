package keys

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
)

// redacted is what a non-empty Secret prints as, whatever the verb.
const redacted = "[redacted]"

// Secret holds a secret: a pre-shared key, a password or a password hash.
// It never prints its value: String, GoString, Format (every verb),
// LogValue and MarshalText give "[redacted]" ("" for an empty Secret, so a
// setting left empty reads as empty). Reveal and Bytes return the value
// where it is needed.
//
// A Secret is a string underneath, so configuration decoders (TOML,
// mapstructure) fill it like any string, and it is immutable.
type Secret string

// NewSecret copies b into a Secret.
func NewSecret(b []byte) Secret { return Secret(b) }

// ParseKey parses the key syntax of rule files ([[device]] psk), psk_file
// and the command line:
//
//	"hex:00112233..."     hexadecimal bytes, an even number of digits
//	"base64:ABEiMw=="     standard base64; the "=" padding may be left out
//	anything else         the string's bytes as they are
//
// An empty key is an error. Errors wrap ErrKey and never quote the key.
func ParseKey(s string) (Secret, error) {
	var b []byte
	switch {
	case strings.HasPrefix(s, "hex:"):
		var err error
		if b, err = hex.DecodeString(s[len("hex:"):]); err != nil {
			// No detail: the decoder's message would quote a key byte.
			return "", fmt.Errorf("%w: after \"hex:\" want an even number of hex digits 0-9a-f", ErrKey)
		}
	case strings.HasPrefix(s, "base64:"):
		enc := s[len("base64:"):]
		var err error
		if b, err = base64.StdEncoding.DecodeString(enc); err != nil {
			b, err = base64.RawStdEncoding.DecodeString(enc)
		}
		if err != nil {
			return "", fmt.Errorf("%w: after \"base64:\" want standard base64 (A-Z a-z 0-9 + /, padding optional)", ErrKey)
		}
	default:
		b = []byte(s)
	}
	if len(b) == 0 {
		return "", fmt.Errorf("%w: empty key", ErrKey)
	}
	return Secret(b), nil
}

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// Bytes returns a copy of the secret's bytes.
func (s Secret) Bytes() []byte { return []byte(s) }

// Len returns the length in bytes.
func (s Secret) Len() int { return len(s) }

// IsZero reports whether the Secret is empty.
func (s Secret) IsZero() bool { return s == "" }

// Equal compares two secrets in constant time.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s), []byte(o)) == 1
}

// String returns "[redacted]", or "" for an empty Secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString returns String, so %#v does not print the value either.
func (s Secret) GoString() string { return s.String() }

// Format implements fmt.Formatter so that every verb (%x, %d, %q, ...)
// prints String: without it a verb that does not call String would print
// the value.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// LogValue implements slog.LogValuer with String.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText implements encoding.TextMarshaler with String, so a Secret in
// a config dump or a JSON log never carries the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
