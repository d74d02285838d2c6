package observe

import "time"

// Verdict is the Tracker's judgement of one notification.
type Verdict uint8

// Verdicts. First, Accept and Reset mean the notification is the newest
// state and should be used; Duplicate and Stale mean it must be ignored
// (RFC 7641 §3.4: a stale notification must not replace a fresher one).
const (
	// First is the first notification of the observation.
	First Verdict = iota
	// Accept is a notification newer than the last accepted one.
	Accept
	// Duplicate repeats the sequence number of the last accepted one.
	Duplicate
	// Stale is older than the last accepted one: it was reordered.
	Stale
	// Reset is accepted although older by the sequence rule, because
	// several notifications in a row went far back in a consistent,
	// increasing way: the server restarted its sequence numbers (for
	// example after a reboot).
	Reset
)

var verdictNames = [...]string{"first", "accept", "duplicate", "stale", "reset"}

// String names the verdict.
func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Accepted reports whether the notification should be delivered.
func (v Verdict) Accepted() bool { return v == First || v == Accept || v == Reset }

// Reset detection defaults.
const (
	// DefaultResetAfter is the number of consecutive stale but mutually
	// increasing notifications after which a Tracker assumes a sequence
	// reset.
	DefaultResetAfter = 3
	// DefaultResetMinGap is how far behind the last accepted value a stale
	// notification must be to count towards a reset. Smaller gaps are
	// plain reordering; a server that restarts close to its old value is
	// caught by the 128-second rule instead.
	DefaultResetMinGap = 256
)

// Tracker keeps the freshness state of one observation on the client side
// (RFC 7641 §3.4). The zero value is ready to use. It is not safe for
// concurrent use.
type Tracker struct {
	// ResetAfter overrides DefaultResetAfter when positive.
	ResetAfter int
	// ResetMinGap overrides DefaultResetMinGap when positive.
	ResetMinGap uint32

	has bool
	seq uint32
	at  time.Time

	// Notifications rejected as stale in a row, each newer than the one
	// before: the signature of a server whose counter restarted.
	shadowN   int
	shadowSeq uint32
}

// Check judges a notification with Observe value seq received at now and,
// when it is accepted, records it as the latest.
func (t *Tracker) Check(seq uint32, now time.Time) Verdict {
	seq &= SeqMask
	if !t.has {
		t.accept(seq, now)
		return First
	}
	if Fresh(t.seq, t.at, seq, now) {
		t.accept(seq, now)
		return Accept
	}
	if seq == t.seq {
		return Duplicate
	}
	if t.shadowN > 0 && seq == t.shadowSeq {
		return Duplicate
	}
	gap := t.ResetMinGap
	if gap == 0 {
		gap = DefaultResetMinGap
	}
	if (t.seq-seq)&SeqMask < gap {
		return Stale
	}
	if t.shadowN > 0 && Newer(t.shadowSeq, seq) {
		t.shadowN++
	} else {
		t.shadowN = 1
	}
	t.shadowSeq = seq
	limit := t.ResetAfter
	if limit <= 0 {
		limit = DefaultResetAfter
	}
	if t.shadowN >= limit {
		t.accept(seq, now)
		return Reset
	}
	return Stale
}

func (t *Tracker) accept(seq uint32, now time.Time) {
	t.has, t.seq, t.at = true, seq, now
	t.shadowN = 0
}

// Clear forgets all state, for a new registration: its response starts a
// new sequence.
func (t *Tracker) Clear() { *t = Tracker{ResetAfter: t.ResetAfter, ResetMinGap: t.ResetMinGap} }

// Last returns the latest accepted sequence number and its arrival time; ok
// is false before the first notification.
func (t *Tracker) Last() (seq uint32, at time.Time, ok bool) { return t.seq, t.at, t.has }

// DefaultMaxAge is the Max-Age of a response without the option, in
// seconds (RFC 7252 §5.10.5).
const DefaultMaxAge = 60

// ReregisterAt returns when a client should re-register an observation
// whose latest notification arrived at last carrying Max-Age maxAge
// seconds: once the representation is no longer fresh and margin has
// passed without a new notification (RFC 7641 §3.3.1). Pass DefaultMaxAge
// when the notification had no Max-Age option.
func ReregisterAt(last time.Time, maxAge uint32, margin time.Duration) time.Time {
	return last.Add(time.Duration(maxAge)*time.Second + margin)
}
