package mqttside

import (
	"math/rand/v2"
	"time"
)

// backoff is the schedule of connection attempts to a remote broker:
// exponential growth from min, capped at max, with jitter.
//
//	attempt   1      2      3      4      5 ...
//	delay     min    2·min  4·min  ...    max, max, ...
//	drawn in  [¾·d, d]  (never above max)
//
// Every wait doubles the next one, so a broker that drops each connection
// at once is not hammered; reset brings the next wait back to min, and
// [Remote] calls it when a connection has stayed up (see RemoteOptions).
// Not safe for concurrent use: one goroutine owns it.
type backoff struct {
	min, max time.Duration
	next     time.Duration
	// jitter returns a value in [0, n]; replaced in tests.
	jitter func(n int64) int64
}

func newBackoff(minDelay, maxDelay time.Duration) *backoff {
	return &backoff{
		min:    minDelay,
		max:    maxDelay,
		next:   minDelay,
		jitter: func(n int64) int64 { return rand.Int64N(n + 1) },
	}
}

// wait returns the delay before the next attempt and doubles the one
// after, up to max. The jitter keeps bridges that lost the same broker
// from coming back in step.
func (b *backoff) wait() time.Duration {
	d := b.next
	b.next = min(2*d, b.max)
	return d - time.Duration(b.jitter(int64(d)/4))
}

// peek returns the upper bound of the next wait, for logs.
func (b *backoff) peek() time.Duration { return b.next }

// reset makes the next wait min again.
func (b *backoff) reset() { b.next = b.min }
