package observe

import "errors"

// Sentinel errors.
var (
	// ErrReset is returned by a Sender when the client answered a
	// notification with RST (RFC 7641 §3.6); the observer is removed.
	ErrReset = errors.New("observe: notification rejected with RST")
	// ErrTimeout is returned by a Sender when a confirmable notification
	// was never acknowledged (RFC 7641 §4.5); the observer is removed.
	ErrTimeout = errors.New("observe: confirmable notification timed out")
	// ErrUnreachable is returned by a Sender when the client's address
	// reported that nothing listens there any more (ICMP port
	// unreachable); like ErrTimeout it removes every observer of that
	// endpoint.
	ErrUnreachable = errors.New("observe: client port unreachable")
	// ErrDeferred is returned by a Sender that cannot take a notification
	// now for want of room (a transport's table of peers is full): the
	// observer is kept with its latest state pending and tried again at
	// the next retry tick, not before, so a full table costs one attempt
	// per observer per tick.
	ErrDeferred = errors.New("observe: notification deferred")
	// ErrClosed reports use of a Notifier after Run has returned.
	ErrClosed = errors.New("observe: notifier closed")
	// ErrTooManyObservers reports a registration beyond Options.MaxObservers.
	ErrTooManyObservers = errors.New("observe: too many observers")
	// ErrFinal is the reason given to OnDeregister after a notification
	// with an error code ended the observation (RFC 7641 §3.2).
	ErrFinal = errors.New("observe: observation ended by error notification")
	// ErrDeregistered is the reason given to OnDeregister for an explicit
	// Deregister (GET with Observe=1, RFC 7641 §3.6).
	ErrDeregistered = errors.New("observe: deregistered")
	// ErrReplaced is the reason given to OnDeregister when a new
	// registration with the same endpoint and token replaced an observer
	// (RFC 7641 §4.1).
	ErrReplaced = errors.New("observe: registration replaced")
)
