package rules

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
)

// Secret holds key material. It prints, formats and logs as "[redacted]" so a
// PSK cannot leak through a log line or an error message.
type Secret struct {
	b []byte
}

const redacted = "[redacted]"

// NewSecret wraps a copy of b.
func NewSecret(b []byte) Secret { return Secret{b: append([]byte(nil), b...)} }

// ParseKey decodes key syntax: "hex:00112233...", "base64:ABEiMw==" or a plain
// string used as its UTF-8 bytes. An empty key is an error.
func ParseKey(s string) (Secret, error) {
	var b []byte
	switch {
	case strings.HasPrefix(s, "hex:"):
		var err error
		if b, err = hex.DecodeString(s[4:]); err != nil {
			// No detail: the decoder's message would quote a key byte.
			return Secret{}, fmt.Errorf("%w: after \"hex:\" want an even number of hex digits 0-9a-f", ErrBadKey)
		}
	case strings.HasPrefix(s, "base64:"):
		var err error
		if b, err = base64.StdEncoding.DecodeString(s[7:]); err != nil {
			return Secret{}, fmt.Errorf("%w: after \"base64:\" want standard base64 with padding", ErrBadKey)
		}
	default:
		b = []byte(s)
	}
	if len(b) == 0 {
		return Secret{}, fmt.Errorf("%w: empty key", ErrBadKey)
	}
	return Secret{b: b}, nil
}

// Bytes returns the key material. The caller must not modify it.
func (s Secret) Bytes() []byte { return s.b }

// Len returns the key length in bytes.
func (s Secret) Len() int { return len(s.b) }

// IsZero reports whether no key is set.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// Equal compares two keys in constant time.
func (s Secret) Equal(o Secret) bool { return subtle.ConstantTimeCompare(s.b, o.b) == 1 }

// String returns "[redacted]".
func (s Secret) String() string { return redacted }

// GoString returns "[redacted]", so %#v does not print the bytes either.
func (s Secret) GoString() string { return redacted }

// LogValue implements slog.LogValuer with a redacted value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText implements encoding.TextMarshaler with a redacted value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// PSK is one pre-shared key entry ([[psk]]): the DTLS PSK identity and key
// (RFC 4279 §2).
type PSK struct {
	Identity string
	Key      Secret
	Pos      Pos
}
