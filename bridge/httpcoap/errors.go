package httpcoap

import "errors"

// Errors a Forwarder returns so the Handler picks the HTTP status.
var (
	// ErrNotAllowed reports a request that no proxy rule allows: 403
	// Forbidden.
	ErrNotAllowed = errors.New("httpcoap: no proxy rule allows the request")
	// ErrUnknownDevice reports a device name the bridge does not know: 404
	// Not Found.
	ErrUnknownDevice = errors.New("httpcoap: unknown device")
)
