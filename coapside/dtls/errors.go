package dtls

import (
	"errors"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
)

// Sentinel errors returned (wrapped) by this package.
var (
	// ErrClosed is returned by operations on a closed ServerConn or ClientConn.
	ErrClosed = errors.New("dtls: connection closed")
	// ErrNoSession is returned by ServerConn.WriteTo when the address has no
	// established DTLS session.
	ErrNoSession = errors.New("dtls: no session with peer")
	// ErrUnknownIdentity is returned when a peer presents a PSK identity that is
	// not in the key store.
	ErrUnknownIdentity = errors.New("dtls: unknown psk identity")
	// ErrBadCertificate is returned when a peer certificate fails verification
	// (untrusted issuer, expired, wrong usage, unpinned key).
	ErrBadCertificate = errors.New("dtls: bad peer certificate")
	// ErrHandshake is returned when a DTLS handshake fails; the wrapped error
	// carries the cause.
	ErrHandshake = errors.New("dtls: handshake failed")
	// ErrLimit is returned when a session cannot be created because a
	// configured limit (sessions or concurrent handshakes) is reached.
	ErrLimit = errors.New("dtls: limit reached")
	// ErrConfig is returned for an invalid configuration.
	ErrConfig = errors.New("dtls: invalid config")
	// ErrPSKFile is returned for a psk_file that cannot be read or parsed
	// (keys.ErrPSKFile).
	ErrPSKFile = keys.ErrPSKFile
	// ErrNotDTLS is returned by record inspection for bytes that are not a
	// DTLS record.
	ErrNotDTLS = errors.New("dtls: not a dtls record")
	// ErrMalformedHello is returned by record inspection for a ClientHello that
	// does not parse.
	ErrMalformedHello = errors.New("dtls: malformed client hello")
)

// HandshakeError describes a failed DTLS handshake. It matches ErrHandshake
// and the underlying cause with errors.Is.
type HandshakeError struct {
	// Reason classifies the failure.
	Reason FailReason
	// Peer is the peer's address.
	Peer string
	// Err is the cause reported by the DTLS library.
	Err error
}

// Error implements error.
func (e *HandshakeError) Error() string {
	return "dtls: handshake with " + e.Peer + " failed (" + e.Reason.String() + "): " + e.Err.Error()
}

// Unwrap returns ErrHandshake and the cause.
func (e *HandshakeError) Unwrap() []error { return []error{ErrHandshake, e.Err} }
