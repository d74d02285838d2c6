package bridge

import "errors"

var (
	// ErrInvalidConfig is wrapped by every error Config.Validate returns.
	ErrInvalidConfig = errors.New("bridge: invalid config")

	// errFiltered reports a message dropped by a where expression: not an
	// error for the sender, counted as filtered.
	errFiltered = errors.New("bridge: filtered by where expression")

	// errNoCredentials reports a coaps device without PSK or certificate
	// settings.
	errNoCredentials = errors.New("bridge: coaps device has no credentials")
)
