package rules

import (
	"errors"
	"sync/atomic"
)

// Stats counts runtime failures by cause, for the bridge to export as
// metrics. The zero value is ready; all methods are safe for concurrent use.
type Stats struct {
	// Escapes counts captured values rejected because they would leave
	// their segment (ErrEscape).
	Escapes atomic.Uint64
	// MissingCaptures counts templates rendered without a capture they
	// need (ErrMissingCapture).
	MissingCaptures atomic.Uint64
	// Conversions counts payloads that did not convert (ErrConvert,
	// ErrContentFormat).
	Conversions atomic.Uint64
	// Expressions counts where/transform failures (ErrExpr).
	Expressions atomic.Uint64
	// Identity counts requests refused by an identity check (ErrIdentity).
	Identity atomic.Uint64
	// NoRoute counts paths and topics no rule matched (ErrNoRoute,
	// ErrMethodNotAllowed).
	NoRoute atomic.Uint64
	// UnknownDevices counts command targets naming no device
	// (ErrUnknownDevice).
	UnknownDevices atomic.Uint64
	// Other counts errors of any other cause.
	Other atomic.Uint64
}

// Record counts err under its cause. A nil error is not counted.
func (s *Stats) Record(err error) {
	switch {
	case err == nil:
	case errors.Is(err, ErrEscape):
		s.Escapes.Add(1)
	case errors.Is(err, ErrMissingCapture):
		s.MissingCaptures.Add(1)
	case errors.Is(err, ErrConvert), errors.Is(err, ErrContentFormat):
		s.Conversions.Add(1)
	case errors.Is(err, ErrExpr):
		s.Expressions.Add(1)
	case errors.Is(err, ErrIdentity):
		s.Identity.Add(1)
	case errors.Is(err, ErrNoRoute), errors.Is(err, ErrMethodNotAllowed):
		s.NoRoute.Add(1)
	case errors.Is(err, ErrUnknownDevice):
		s.UnknownDevices.Add(1)
	default:
		s.Other.Add(1)
	}
}
