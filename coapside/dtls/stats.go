package dtls

import "sync/atomic"

// FailReason classifies a failed handshake for metrics and logs.
type FailReason int

// Handshake failure reasons.
const (
	// FailOther is any failure not covered below (cipher suite mismatch,
	// protocol errors, alerts from the peer).
	FailOther FailReason = iota
	// FailBadPSK is a key mismatch: on the server, a known identity whose
	// encrypted Finished did not verify (pion drops it silently, so this is
	// recognised when the handshake then fails); on the client, a server
	// that ended the handshake with an alert after the key was used.
	FailBadPSK
	// FailUnknownIdentity is a PSK identity that is not in the store.
	FailUnknownIdentity
	// FailBadCert is a missing, untrusted, expired or unpinned certificate.
	FailBadCert
	// FailTimeout is a handshake that did not finish within HandshakeTimeout.
	FailTimeout
	numFailReasons
)

// String returns the metric label of the reason.
func (r FailReason) String() string {
	switch r {
	case FailBadPSK:
		return "bad_psk"
	case FailUnknownIdentity:
		return "unknown_identity"
	case FailBadCert:
		return "bad_cert"
	case FailTimeout:
		return "timeout"
	default:
		return "other"
	}
}

// FailReasons lists every FailReason, for exporting metrics.
func FailReasons() []FailReason {
	out := make([]FailReason, 0, numFailReasons)
	for r := FailOther; r < numFailReasons; r++ {
		out = append(out, r)
	}
	return out
}

// Stats is a snapshot of a connection's counters. Counters only grow; the
// Active fields are gauges.
type Stats struct {
	// HandshakesOK counts completed handshakes.
	HandshakesOK uint64
	// HandshakesResumed counts the completed handshakes among HandshakesOK
	// that resumed a cached session (abbreviated handshake: no key
	// exchange, certificate or signature).
	HandshakesResumed uint64
	// ResumeInvalid counts cached sessions not resumed because what
	// authenticated them changed: on a server, the PSK identity was
	// removed or its key changed (the peer then runs a full handshake);
	// on a client, the credentials for that server changed (it offers no
	// session).
	ResumeInvalid uint64
	// HandshakesFailed counts failed handshakes, indexed by FailReason.
	HandshakesFailed [numFailReasons]uint64
	// HandshakesActive is the number of handshakes in progress.
	HandshakesActive int64
	// SessionsActive is the number of established sessions.
	SessionsActive int64
	// SessionsExpired counts sessions closed for being idle.
	SessionsExpired uint64
	// SessionsDead counts client sessions dropped because the server stopped
	// answering (ClientConfig.DeadAfter).
	SessionsDead uint64
	// SessionsReplaced counts established sessions replaced by a completed
	// new handshake from the same address (RFC 6347 §4.2.8).
	SessionsReplaced uint64
	// SessionsMoved counts established sessions ended because their peer
	// resumed the same DTLS session from another address (a NAT
	// rebinding): the old address is dead.
	SessionsMoved uint64
	// RefusedLimit counts handshakes refused because MaxHandshakes or
	// MaxSessions was reached and no handshake waiting for its cookie could
	// be evicted.
	RefusedLimit uint64
	// RefusedPerSource counts the handshakes among RefusedLimit refused
	// because their source address had MaxHandshakesPerSource in progress,
	// none of them waiting for its cookie.
	RefusedPerSource uint64
	// BackoffRefusals counts client writes refused at once because the
	// last handshake with that server failed within RetryBackoff.
	BackoffRefusals uint64
	// RefusedMalformed counts ClientHellos refused because they did not parse.
	RefusedMalformed uint64
	// RefusedCookie counts ClientHellos carrying a cookie from an address
	// with no handshake in progress. Only the handshake that issued a
	// cookie can accept it, so such a hello is refused before any state is
	// allocated (a forged cookie must not buy a handshake slot).
	RefusedCookie uint64
	// HandshakesEvicted counts handshakes whose peer had not returned the
	// HelloVerifyRequest cookie (RFC 6347 §4.2.1) and that were ended to
	// give their slot to a newer ClientHello because MaxHandshakes or
	// MaxSessions was reached. They are not counted as failed.
	HandshakesEvicted uint64
	// DroppedNotDTLS counts datagrams from unknown peers that were not a DTLS
	// ClientHello (plaintext CoAP sent to the DTLS port, stray records).
	DroppedNotDTLS uint64
	// DroppedUnknownPeer counts DTLS records (other than a ClientHello) from
	// addresses without a session, e.g. a peer still using a session this end
	// has expired or forgotten. Alerts are not counted: most are the
	// close_notify a peer answers the end of its session with.
	DroppedUnknownPeer uint64
	// DroppedQueueFull counts datagrams dropped because a reader fell behind.
	DroppedQueueFull uint64
	// ReadErrors counts errors from the underlying socket.
	ReadErrors uint64
}

// Failed returns the failure count for reason r.
func (s Stats) Failed(r FailReason) uint64 {
	if r < 0 || r >= numFailReasons {
		return 0
	}
	return s.HandshakesFailed[r]
}

// TotalFailed returns the failure count over all reasons.
func (s Stats) TotalFailed() uint64 {
	var n uint64
	for _, v := range s.HandshakesFailed {
		n += v
	}
	return n
}

// counters is the live, atomic form of Stats.
type counters struct {
	handshakesOK      atomic.Uint64
	handshakesResumed atomic.Uint64
	resumeInvalid     atomic.Uint64
	sessionsMoved     atomic.Uint64
	handshakesFailed  [numFailReasons]atomic.Uint64
	handshakesActive  atomic.Int64
	sessionsActive    atomic.Int64
	sessionsExpired   atomic.Uint64
	sessionsReplaced  atomic.Uint64
	sessionsDead      atomic.Uint64
	refusedLimit      atomic.Uint64
	refusedPerSource  atomic.Uint64
	refusedMalformed  atomic.Uint64
	refusedCookie     atomic.Uint64
	handshakesEvicted atomic.Uint64
	backoffRefusals   atomic.Uint64
	droppedNotDTLS    atomic.Uint64
	droppedUnknown    atomic.Uint64
	droppedQueueFull  atomic.Uint64
	readErrors        atomic.Uint64
}

func (c *counters) snapshot() Stats {
	s := Stats{
		HandshakesOK:       c.handshakesOK.Load(),
		HandshakesResumed:  c.handshakesResumed.Load(),
		ResumeInvalid:      c.resumeInvalid.Load(),
		SessionsMoved:      c.sessionsMoved.Load(),
		HandshakesActive:   c.handshakesActive.Load(),
		SessionsActive:     c.sessionsActive.Load(),
		SessionsExpired:    c.sessionsExpired.Load(),
		SessionsReplaced:   c.sessionsReplaced.Load(),
		SessionsDead:       c.sessionsDead.Load(),
		RefusedLimit:       c.refusedLimit.Load(),
		RefusedPerSource:   c.refusedPerSource.Load(),
		RefusedMalformed:   c.refusedMalformed.Load(),
		RefusedCookie:      c.refusedCookie.Load(),
		HandshakesEvicted:  c.handshakesEvicted.Load(),
		BackoffRefusals:    c.backoffRefusals.Load(),
		DroppedNotDTLS:     c.droppedNotDTLS.Load(),
		DroppedQueueFull:   c.droppedQueueFull.Load(),
		DroppedUnknownPeer: c.droppedUnknown.Load(),
		ReadErrors:         c.readErrors.Load(),
	}
	for i := range c.handshakesFailed {
		s.HandshakesFailed[i] = c.handshakesFailed[i].Load()
	}
	return s
}
