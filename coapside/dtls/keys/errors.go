package keys

import "errors"

// Sentinel errors, returned wrapped.
var (
	// ErrKey reports key syntax that does not parse (see ParseKey). Its
	// messages never quote the key.
	ErrKey = errors.New("keys: bad key")
	// ErrPSKFile reports a psk_file that cannot be read or parsed; the
	// message reads "file:line: problem".
	ErrPSKFile = errors.New("keys: bad psk file")
	// ErrPin reports an SPKI pin that does not parse (see ParsePin).
	ErrPin = errors.New("keys: bad pin")
)
