package message

import "errors"

// Sentinel errors returned by the codec. Decoding errors wrap ErrMalformed so a
// caller can tell a bad datagram from other failures with errors.Is.
var (
	// ErrMalformed is wrapped by every message format error (RFC 7252 §4.2).
	ErrMalformed = errors.New("coap: malformed message")
	// ErrTruncatedHeader means fewer than 4 bytes were available for the header.
	ErrTruncatedHeader = errors.New("coap: truncated header")
	// ErrVersion means the version field is not 1.
	ErrVersion = errors.New("coap: unsupported version")
	// ErrTokenLength means TKL was 9-15, or a token longer than 8 bytes was given.
	ErrTokenLength = errors.New("coap: invalid token length")
	// ErrTruncated means the token, an option or its extended fields run past the end.
	ErrTruncated = errors.New("coap: truncated message")
	// ErrOptionNibble means an option delta or length nibble used the reserved value 15.
	ErrOptionNibble = errors.New("coap: reserved option nibble 15")
	// ErrEmptyPayload means a payload marker was followed by a zero-length payload.
	ErrEmptyPayload = errors.New("coap: payload marker with empty payload")
	// ErrEmptyMessage means an Empty (0.00) message carried a token, options or payload.
	ErrEmptyMessage = errors.New("coap: empty message with content")
	// ErrOptionNumber means an option number exceeds 65535 or options are unsortable.
	ErrOptionNumber = errors.New("coap: option number out of range")
	// ErrOptionTooLong means an option value exceeds 65535+269 bytes.
	ErrOptionTooLong = errors.New("coap: option value too long")
	// ErrOptionNotFound is returned by typed accessors when the option is absent.
	ErrOptionNotFound = errors.New("coap: option not found")
	// ErrOptionFormat is returned when an option value does not fit its format.
	ErrOptionFormat = errors.New("coap: option value has wrong format")
	// ErrInvalidType means the message type is invalid for the operation.
	ErrInvalidType = errors.New("coap: invalid message type")
)
