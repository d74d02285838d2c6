package dtls

import (
	"container/list"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	pdtls "github.com/pion/dtls/v2"
	"github.com/pion/dtls/v2/pkg/protocol"
	"github.com/pion/dtls/v2/pkg/protocol/alert"
)

const (
	roleServer = "server"
	roleClient = "client"
)

// endReason records why a session was ended from outside its goroutine.
type endReason int32

const (
	endNone endReason = iota
	endExpired
	endReplaced
	endClosed
	endShutdown
	endDead
	endEvicted
	endMoved
	endRekeyed
	endRevoked
)

func (r endReason) String() string {
	switch r {
	case endExpired:
		return "idle"
	case endReplaced:
		return "replaced"
	case endClosed:
		return "closed"
	case endShutdown:
		return "shutdown"
	case endDead:
		return "no answer"
	case endEvicted:
		return "evicted"
	case endMoved:
		return "resumed from another address"
	case endRekeyed:
		return "credentials changed"
	case endRevoked:
		return "key revoked"
	default:
		return "peer"
	}
}

// session is one peer: its pion connection, the peerConn under it, and what
// the handshake learned (identity, failure evidence).
type session struct {
	ep   *endpoint
	key  peerKey
	addr net.Addr
	raw  *peerConn

	hsCtx    context.Context
	hsCancel context.CancelFunc

	conn  atomic.Pointer[pdtls.Conn]
	ready chan struct{} // closed when the handshake ends; err is set before
	err   error
	stop  chan struct{} // closed by end
	why   atomic.Int32  // endReason

	// cand is a handshake from the same address that will replace this
	// session when it completes; replaces is the reverse link.
	cand     atomic.Pointer[session]
	replaces *session

	ident atomic.Pointer[string]
	// credKey names the credentials a client session was made with (see
	// ClientConn.HandshakeWith, Credentials.Name); nil on a server.
	credKey atomic.Pointer[string]
	last    atomic.Int64 // unix nanos of last activity
	// unanswered is when this end first wrote after the last datagram
	// received (unix nanos), 0 when every write has been followed by one.
	unanswered atomic.Int64
	since      atomic.Int64 // unix nanos when established

	// Evidence for classifying a failed handshake.
	pskKnown     atomic.Bool // the key for the identity was supplied
	pskUnknown   atomic.Bool // the server did not know the identity
	certFailed   atomic.Bool // our verifier rejected the peer certificate
	sawEncrypted atomic.Bool // the peer sent an epoch >= 1 record
	cookieSeen   atomic.Bool // the peer returned the HelloVerifyRequest cookie
	cookieLate   atomic.Bool // the cookie timer aborted the handshake

	// Session resumption (resume.go): the entry a full handshake stored,
	// staged until it completes; the cached entry a resumed handshake
	// offered; the key of the entry this session holds once established
	// (written before ready is closed); the digest of the PSK used.
	staged    atomic.Pointer[resumeEntry]
	offered   atomic.Pointer[resumeEntry]
	resumeKey string
	pskDigest atomic.Pointer[[32]byte]
	// hold, on a client offering resumption, delivers the server's
	// flight whole (see flightHold); set before the handshake starts, read
	// by the read loop.
	hold atomic.Pointer[flightHold]

	// issued is the cookie this end sent in its HelloVerifyRequest; a
	// ClientHello returning it proves the peer receives at its address.
	issued atomic.Pointer[[]byte]

	// Guarded by ep.mu: whether the session holds a handshake slot, and
	// its place among the handshakes still waiting for their cookie.
	slot    bool
	pending *list.Element
}

func newSession(ep *endpoint, key peerKey, addr net.Addr) *session {
	ctx, cancel := context.WithTimeout(ep.ctx, ep.opt.handshakeTimeout)
	return &session{
		ep:       ep,
		key:      key,
		addr:     addr,
		raw:      newPeerConn(ep.pc, addr, ep.opt.queueLen),
		hsCtx:    ctx,
		hsCancel: cancel,
		ready:    make(chan struct{}),
		stop:     make(chan struct{}),
	}
}

func (s *session) established() bool { return s.conn.Load() != nil }

func (s *session) identity() string {
	if p := s.ident.Load(); p != nil {
		return *p
	}
	return ""
}

func (s *session) setIdentity(id string) { s.ident.Store(&id) }

func (s *session) touch() { s.last.Store(time.Now().UnixNano()) }

// noteWrite records a write for presumedDead.
func (s *session) noteWrite() {
	u := s.unanswered.Load()
	if u == 0 || s.last.Load() >= u {
		s.unanswered.CompareAndSwap(u, time.Now().UnixNano())
	}
}

// presumedDead reports whether this end wrote more than after ago and has
// received nothing since.
func (s *session) presumedDead(after time.Duration) bool {
	if after <= 0 || !s.established() {
		return false
	}
	u := s.unanswered.Load()
	return u != 0 && s.last.Load() < u && time.Since(time.Unix(0, u)) > after
}

// end asks the session goroutine to finish; it does not block. An
// established session sends close_notify on its way out.
func (s *session) end(r endReason) {
	if !s.why.CompareAndSwap(int32(endNone), int32(r)) {
		return
	}
	close(s.stop)
	s.hsCancel()
	if c := s.conn.Load(); c != nil {
		_ = c.SetReadDeadline(time.Unix(1, 0)) // wake the reader
	}
}

// madeWith reports whether a client session was made with the
// credentials named key (see ClientConn.HandshakeWith).
func (s *session) madeWith(key string) bool { return s.credentialsName() == key }

// credentialsName is the name of the credentials a client session was
// made with ("" when they have none).
func (s *session) credentialsName() string {
	if k := s.credKey.Load(); k != nil {
		return *k
	}
	return ""
}

// errSessionRekeyed: a handshake in progress was ended because a caller
// wanted a session with other credentials.
var errSessionRekeyed = errors.New("dtls: session ended for other credentials")

func (s *session) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// observeHandshakeRecord notes evidence while the handshake runs: encrypted
// records (the peer's Finished) and the return of the cookie this end
// issued (RFC 6347 §4.2.1). Only the exact cookie counts: any other value
// could be forged without receiving anything.
func (s *session) observeHandshakeRecord(b []byte) {
	if maxEpoch(b) > 0 {
		s.sawEncrypted.Store(true)
		return
	}
	if s.cookieSeen.Load() {
		return
	}
	issued := s.issued.Load()
	if issued == nil {
		return
	}
	if c, ok := helloCookie(b); ok && subtle.ConstantTimeCompare(c, *issued) == 1 {
		s.cookieSeen.Store(true)
		s.ep.cookieReturned(s)
	}
}

// watchCookie records the cookie of an outgoing HelloVerifyRequest.
func (s *session) watchCookie(p []byte) {
	if s.issued.Load() != nil {
		return
	}
	if c, ok := verifyRequestCookie(p); ok {
		c = append([]byte(nil), c...)
		s.issued.Store(&c)
	}
}

// isNewHandshake reports whether b is a well-formed epoch-0 ClientHello on
// an established session.
func (s *session) isNewHandshake(b []byte) bool {
	if recordEpoch(b) != 0 || protocol.ContentType(b[0]) != protocol.ContentTypeHandshake {
		return false
	}
	_, err := inspectHello(b)
	return err == nil
}

// handshakeFunc runs the pion handshake over raw.
type handshakeFunc func(ctx context.Context, raw net.Conn) (*pdtls.Conn, error)

// run performs the handshake, then pumps decrypted datagrams to the
// endpoint until the session ends. It is the session's only goroutine.
func (s *session) run(hs handshakeFunc) {
	ep := s.ep
	defer ep.sessWG.Done()
	conn, err := hs(s.hsCtx, s.raw)
	s.hsCancel()
	ep.handshakeDone(s)
	if err != nil {
		s.fail(err)
		return
	}
	s.raw.markEstablished()
	now := time.Now().UnixNano()
	s.last.Store(now)
	s.since.Store(now)
	resumed, prev := s.commitResumption(ep.resume)
	s.conn.Store(conn)
	if s.replaces != nil {
		ep.promote(s)
	}
	if prev != nil && prev != s && prev.ep == ep && prev.key != s.key {
		ep.moved(prev, s)
	}
	ep.stats.handshakesOK.Add(1)
	if resumed {
		ep.stats.handshakesResumed.Add(1)
	}
	ep.stats.sessionsActive.Add(1)
	close(s.ready)
	ep.log.Info("dtls session established", "peer", s.addr.String(), "identity", s.identity(),
		"role", ep.opt.role, "resumed", resumed)

	if !s.stopped() {
		s.pump(conn)
	}
	_ = conn.Close() // sends close_notify unless the peer closed first
	s.raw.closeAll()
	ep.remove(s)
	if ep.resume != nil && s.resumeKey != "" {
		ep.resume.release(s.resumeKey, s)
	}
	ep.stats.sessionsActive.Add(-1)
	ep.log.Debug("dtls session closed", "peer", s.addr.String(), "identity", s.identity(),
		"reason", endReason(s.why.Load()).String(), "role", ep.opt.role)
}

// pump copies decrypted datagrams to the endpoint's read queue.
func (s *session) pump(conn *pdtls.Conn) {
	buf := make([]byte, s.ep.opt.readBufferSize)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if s.stopped() || errors.Is(err, io.EOF) || errors.Is(err, pdtls.ErrConnClosed) ||
				errors.Is(err, net.ErrClosed) {
				return
			}
			// A non-fatal alert or a record error: pion keeps the
			// session, and so do we.
			s.ep.log.Debug("dtls session read error", "peer", s.addr.String(), "err", err)
			continue
		}
		s.touch()
		if !s.ep.deliverApp(datagram{b: append([]byte(nil), buf[:n]...), addr: s.addr}, s.stop) {
			return
		}
	}
}

// fail records a failed handshake.
func (s *session) fail(err error) {
	ep := s.ep
	s.raw.closeAll()
	ep.remove(s)
	if s.replaces != nil {
		s.replaces.cand.CompareAndSwap(s, nil)
	}
	why := endReason(s.why.Load())
	reason := s.classify(err)
	if why == endRekeyed {
		err = fmt.Errorf("%w: %w", errSessionRekeyed, err)
	}
	s.err = &HandshakeError{Reason: reason, Peer: s.addr.String(), Err: err}
	// Not the peer's failure: this end shut down, closed or evicted it
	// (evictions have their own counter).
	if why != endShutdown && why != endClosed && why != endEvicted && why != endRekeyed && !ep.closed() {
		ep.stats.handshakesFailed[reason].Add(1)
		ep.noteFailure(s, reason, err)
	}
	close(s.ready) // after the counters, so a waiter sees them
}

// classify maps a handshake error and the evidence gathered on the way to a
// FailReason.
func (s *session) classify(err error) FailReason {
	desc, hasAlert := alertOf(err)
	timeout := isTimeout(err) || s.cookieLate.Load()
	switch {
	case s.pskUnknown.Load() || errors.Is(err, ErrUnknownIdentity) ||
		(hasAlert && desc == alertUnknownPSKIdentity):
		return FailUnknownIdentity
	case s.certFailed.Load() || errors.Is(err, ErrBadCertificate) ||
		(hasAlert && isCertAlert(desc)) || isCertRequiredErr(err):
		return FailBadCert
	case s.pskKnown.Load() && (s.sawEncrypted.Load() ||
		(hasAlert && (desc == alert.BadRecordMac || desc == alert.DecryptError))):
		// The key was used but the peer's Finished did not verify (the
		// server discards it silently, RFC 6347 §4.1.2.7) or the peer
		// said so with an alert.
		return FailBadPSK
	case s.pskKnown.Load() && hasAlert && s.ep.opt.role == roleClient:
		// The client supplies its key only after the suite is agreed; a
		// server that then ends the handshake (GnuTLS sends close_notify)
		// rejected the key. A server that goes quiet instead (pion) is
		// indistinguishable from packet loss and counts as a timeout.
		return FailBadPSK
	case timeout:
		return FailTimeout
	default:
		return FailOther
	}
}

// alertUnknownPSKIdentity is the unknown_psk_identity alert (RFC 4279 §2),
// which pion does not name.
const alertUnknownPSKIdentity alert.Description = 115

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// alertOf extracts the description of a TLS alert received from the peer.
func alertOf(err error) (alert.Description, bool) {
	var a interface {
		error
		IsFatalOrCloseNotify() bool
		Marshal() ([]byte, error)
	}
	if !errors.As(err, &a) {
		return 0, false
	}
	b, mErr := a.Marshal()
	if mErr != nil || len(b) < 2 {
		return 0, false
	}
	return alert.Description(b[1]), true
}

func isCertAlert(d alert.Description) bool {
	switch d {
	case alert.BadCertificate, alert.UnsupportedCertificate, alert.CertificateRevoked,
		alert.CertificateExpired, alert.CertificateUnknown, alert.UnknownCA, alert.NoCertificate:
		return true
	}
	return false
}

// isCertRequiredErr matches pion's error for a client that sent no
// certificate although one was required; pion does not export it.
func isCertRequiredErr(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e.Error() == "server required client verification, but got none" {
			return true
		}
	}
	return false
}
