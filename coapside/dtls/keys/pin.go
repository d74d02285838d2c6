package keys

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// Pin is the SHA-256 digest of a certificate's SubjectPublicKeyInfo. A pinned
// peer is accepted by its key alone, like an RFC 7250 raw public key: chain,
// issuer and validity dates are not consulted.
type Pin [sha256.Size]byte

// PinOf returns the pin of a certificate.
func PinOf(c *x509.Certificate) Pin {
	return sha256.Sum256(c.RawSubjectPublicKeyInfo)
}

// ParsePin parses "sha256:<64 hex digits>" (the prefix is optional), the
// form String prints. Errors wrap ErrPin.
func ParsePin(s string) (Pin, error) {
	var p Pin
	b, err := hex.DecodeString(strings.TrimPrefix(s, "sha256:"))
	if err != nil {
		return p, fmt.Errorf("%w: want \"sha256:\" and %d hex digits", ErrPin, 2*len(p))
	}
	if len(b) != len(p) {
		return p, fmt.Errorf("%w: want %d bytes, got %d", ErrPin, len(p), len(b))
	}
	copy(p[:], b)
	return p, nil
}

// String returns "sha256:<hex>".
func (p Pin) String() string { return "sha256:" + hex.EncodeToString(p[:]) }
