package bridge

import "errors"

var (
	// ErrInvalidConfig is wrapped by every error Config.Validate returns.
	ErrInvalidConfig = errors.New("bridge: invalid config")

	// ErrEmptiedFile is returned by Reload when a rule file (or the
	// psk_file) that held rules is now empty: the reload is refused.
	ErrEmptiedFile = errors.New("bridge: rule file emptied")

	// ErrNotRunning is returned by Reload when Run has not started the
	// bridge yet, or has begun shutting it down.
	ErrNotRunning = errors.New("bridge: not running")

	// ErrAlreadyRun is returned by a second call of Run: a Bridge runs
	// once.
	ErrAlreadyRun = errors.New("bridge: Run already called")

	// ErrRulesUnsettled is returned by Reload when the rule files kept
	// changing while it waited for them to settle.
	ErrRulesUnsettled = errors.New("bridge: rule files keep changing")

	// errFiltered reports a message dropped by a where expression: not an
	// error for the sender, counted as filtered.
	errFiltered = errors.New("bridge: filtered by where expression")

	// errNoCredentials reports a coaps device without PSK or certificate
	// settings.
	errNoCredentials = errors.New("bridge: coaps device has no credentials")
)
