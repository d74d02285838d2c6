package dtls

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	pdtls "github.com/pion/dtls/v2"
)

// ServerConfig configures a ServerConn. At least one of PSK and Certificate
// must be set.
type ServerConfig struct {
	// PSK holds the identities and keys accepted. Reload or Replace it at
	// any time; new handshakes use the new table.
	PSK *PSKStore
	// IdentityHint is sent to clients in PSK handshakes (RFC 4279 §2).
	IdentityHint string
	// Certificate is the server's ECDSA certificate chain and key.
	Certificate *tls.Certificate
	// ClientCAs, when set, requires clients in certificate handshakes to
	// present a certificate chaining to one of these CAs.
	ClientCAs *x509.CertPool
	// ClientPins, when set, accepts client certificates whose public key is
	// pinned, whatever their issuer (raw-public-key style). With ClientCAs
	// also set, either is enough.
	ClientPins []Pin
	// CipherSuites overrides the defaults (DefaultPSKSuites and/or
	// DefaultCertSuites, by what is configured).
	CipherSuites []CipherSuite
	// CookieTimeout aborts a handshake whose client has not returned the
	// HelloVerifyRequest cookie (RFC 6347 §4.2.1) in this time. Until the
	// cookie is back such a handshake never keeps a newer ClientHello out:
	// at MaxHandshakes or MaxSessions the oldest of them is evicted
	// (Stats.HandshakesEvicted). Default 3s.
	CookieTimeout time.Duration
	// Now is the clock for certificate validity. Default time.Now.
	Now func() time.Time

	Limits
}

func (c *ServerConfig) setDefaults() {
	c.Limits.setDefaults()
	if c.CookieTimeout <= 0 {
		c.CookieTimeout = 3 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports configuration errors.
func (c *ServerConfig) Validate() error {
	if c.PSK == nil && c.Certificate == nil {
		return fmt.Errorf("%w: server needs a psk store or a certificate", ErrConfig)
	}
	if c.IdentityHint != "" && c.PSK == nil {
		return fmt.Errorf("%w: identity hint without psk store", ErrConfig)
	}
	if c.Certificate != nil {
		if err := checkCertificate(c.Certificate); err != nil {
			return err
		}
	}
	if (c.ClientCAs != nil || len(c.ClientPins) > 0) && c.Certificate == nil {
		return fmt.Errorf("%w: client certificate verification needs a server certificate", ErrConfig)
	}
	return nil
}

func checkCertificate(c *tls.Certificate) error {
	if len(c.Certificate) == 0 {
		return fmt.Errorf("%w: certificate has no chain", ErrConfig)
	}
	if _, ok := c.PrivateKey.(*ecdsa.PrivateKey); !ok {
		return fmt.Errorf("%w: certificate key must be ECDSA (RFC 7252 §9.1.3.3)", ErrConfig)
	}
	return nil
}

// ServerConn is a net.PacketConn that accepts DTLS sessions from many peers
// on one socket. ReadFrom returns decrypted datagrams; WriteTo encrypts to an
// established session. It is safe for concurrent use.
type ServerConn struct {
	ep       *endpoint
	cfg      ServerConfig
	base     pdtls.Config
	verifier *certVerifier
}

// Listen opens a UDP socket on address ("udp", "udp4" or "udp6" network) and
// serves DTLS on it.
func Listen(network, address string, cfg ServerConfig) (*ServerConn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket(network, address)
	if err != nil {
		return nil, fmt.Errorf("dtls: listen: %w", err)
	}
	s, err := NewServerConn(pc, cfg)
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	return s, nil
}

// NewServerConn serves DTLS on pc. The ServerConn takes ownership of pc and
// closes it on Close.
func NewServerConn(pc net.PacketConn, cfg ServerConfig) (*ServerConn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	s := &ServerConn{cfg: cfg}
	s.verifier = newCertVerifier(cfg.ClientCAs, cfg.ClientPins, x509.ExtKeyUsageClientAuth, "", cfg.Now)
	s.base = pdtls.Config{
		CipherSuites:         suitesFor(cfg.CipherSuites, cfg.PSK != nil, cfg.Certificate != nil),
		ExtendedMasterSecret: pdtls.RequestExtendedMasterSecret,
		FlightInterval:       cfg.FlightInterval,
		MTU:                  cfg.MTU,
		LoggerFactory:        pionLogs{log: cfg.Logger},
		// RFC 6347 §4.2.1: always answer the first ClientHello with a
		// HelloVerifyRequest cookie (amplification protection).
		InsecureSkipVerifyHello: false,
	}
	if cfg.PSK != nil && cfg.IdentityHint != "" {
		s.base.PSKIdentityHint = []byte(cfg.IdentityHint)
	}
	if cfg.Certificate != nil {
		s.base.Certificates = []tls.Certificate{*cfg.Certificate}
	}
	if s.verifier.enabled() {
		// Chain and pin checks run in VerifyPeerCertificate; pion still
		// checks the CertificateVerify signature (proof of the key).
		s.base.ClientAuth = pdtls.RequireAnyClientCert
	}
	opt := cfg.endpointOptions(roleServer, true)
	opt.evictUnverified = true
	// A client's sessions all go to servers it dials; only a listener
	// bounds handshakes per source.
	opt.maxPerSource = cfg.MaxHandshakesPerSource
	s.ep = newEndpoint(pc, opt)
	s.ep.resume = newResumeCache(cfg.ResumeSessions, cfg.ResumeLifetime, time.Now)
	s.ep.onUnknown = s.unknownPeer
	s.ep.onRehandshake = s.rehandshake
	s.ep.start()
	return s, nil
}

// unknownPeer decides whether a datagram from an address without a session
// may start a handshake. Nothing is allocated for anything but a well-formed
// ClientHello within the limits.
func (s *ServerConn) unknownPeer(b []byte, addr net.Addr, key peerKey) {
	ep := s.ep
	info, err := inspectHello(b)
	switch {
	case errors.Is(err, ErrNotDTLS):
		if looksLikeDTLS(b) {
			ep.stats.droppedUnknown.Add(1)
			ep.noteDrop(dropUnknownPeer, addr, nil)
		} else {
			ep.stats.droppedNotDTLS.Add(1)
			ep.noteDrop(dropNotDTLS, addr, nil)
		}
		return
	case err != nil:
		ep.stats.refusedMalformed.Add(1)
		ep.noteDrop(dropMalformed, addr, err)
		return
	case hasCookie(b):
		// RFC 6347 §4.2.1: a cookie answers the HelloVerifyRequest of a
		// handshake in progress; without one (never started, timed out or
		// evicted) pion could not accept it, and a forged cookie must not
		// buy a slot. The client starts over with a fresh ClientHello.
		ep.stats.refusedCookie.Add(1)
		ep.noteDrop(dropStaleCookie, addr, nil)
		return
	}
	sess, created, err := ep.newSession(key, addr)
	if err != nil {
		if errors.Is(err, ErrLimit) {
			ep.noteDrop(dropLimit, addr, err)
		}
		return
	}
	if !created {
		ep.deliverTo(sess, b, addr)
		return
	}
	s.startHandshake(sess, info, b)
}

// rehandshake starts a handshake beside the established session old, from
// the same address; it replaces old only if it completes.
func (s *ServerConn) rehandshake(old *session, b []byte, addr net.Addr) {
	ep := s.ep
	info, err := inspectHello(b)
	if err != nil {
		return // isNewHandshake checked it
	}
	if hasCookie(b) {
		ep.stats.refusedCookie.Add(1) // as in unknownPeer
		ep.noteDrop(dropStaleCookie, addr, nil)
		return
	}
	sess, err := ep.newCandidate(old)
	if err != nil {
		if errors.Is(err, ErrLimit) {
			ep.noteDrop(dropLimit, addr, err)
		}
		return
	}
	s.startHandshake(sess, info, b)
}

// startHandshake feeds the first datagram to a new session and runs its
// handshake with the cookie timer armed. The HelloVerifyRequest pion sends
// is read on its way out, so that only the return of that exact cookie
// verifies the peer (session.observeHandshakeRecord).
func (s *ServerConn) startHandshake(sess *session, info helloInfo, b []byte) {
	sess.raw.watch = sess.watchCookie
	s.ep.deliverTo(sess, b, sess.addr)
	cfg := s.sessionConfig(sess, info)
	cookieTimer := time.AfterFunc(s.cfg.CookieTimeout, func() {
		if !sess.cookieSeen.Load() {
			sess.cookieLate.Store(true)
			sess.hsCancel()
		}
	})
	go sess.run(func(ctx context.Context, raw net.Conn) (*pdtls.Conn, error) {
		defer cookieTimer.Stop()
		return pdtls.ServerWithContext(ctx, raw, cfg)
	})
}

// sessionConfig is the pion config for one handshake: the shared base plus
// callbacks that record what the handshake learns about the peer.
func (s *ServerConn) sessionConfig(sess *session, hello helloInfo) *pdtls.Config {
	cfg := s.base
	if s.cfg.PSK != nil && s.verifier.enabled() && choosesPSK(hello.suites, cfg.CipherSuites) {
		// pion requests a client certificate whatever the suite; a client
		// whose preferred suite is a PSK one (a PSK client, whatever else
		// it offers) gets a PSK-only handshake instead.
		cfg.CipherSuites = filterSuites(cfg.CipherSuites, isPSKSuite)
		cfg.ClientAuth = pdtls.NoClientCert
		cfg.Certificates = nil
	}
	if store := s.cfg.PSK; store != nil {
		cfg.PSK = func(id []byte) ([]byte, error) {
			identity := string(id)
			if len(identity) > MaxIdentityLen {
				identity = identity[:MaxIdentityLen]
			}
			sess.setIdentity(identity)
			key, ok := store.Lookup(string(id))
			if !ok {
				sess.pskUnknown.Store(true)
				return nil, fmt.Errorf("%w: %q", ErrUnknownIdentity, identity)
			}
			sess.pskKnown.Store(true)
			d := keyDigest(key.Bytes())
			sess.pskDigest.Store(&d)
			return key.Bytes(), nil
		}
	}
	if s.ep.resume != nil {
		cfg.SessionStore = &sessionStore{
			cache: s.ep.resume,
			sess:  sess,
			valid: s.resumable,
			bind: func(e *resumeEntry) {
				if d := sess.pskDigest.Load(); d != nil {
					e.psk, e.binding = true, *d
				}
			},
		}
	}
	if s.verifier.enabled() {
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := s.verifier.verify(raw)
			if err != nil {
				sess.certFailed.Store(true)
				return err
			}
			sess.setIdentity(certIdentity(leaf))
			return nil
		}
	}
	return &cfg
}

// resumable reports whether a cached session may still be resumed: one
// made with a PSK only while the store holds its identity with the same
// key, so that removing or changing a key in the psk_file ends resumption
// for it. pion resumes no session whose client sent a certificate (it
// never offers one to cache), so certificate identities need no check here.
func (s *ServerConn) resumable(e *resumeEntry) bool {
	if !e.psk {
		return true
	}
	key, ok := s.cfg.PSK.Lookup(e.identity)
	return ok && keyDigest(key.Bytes()) == e.binding
}

// EndRevokedSessions ends every established session made with a PSK
// the store no longer holds with the same key (its identity removed from
// the psk_file, or its key changed), as a reloaded store must: a revoked
// device keeps no session. It returns how many it ended.
func (s *ServerConn) EndRevokedSessions() int {
	if s.cfg.PSK == nil {
		return 0
	}
	var revoked []*session
	s.ep.mu.Lock()
	for _, sess := range s.ep.peers {
		d := sess.pskDigest.Load()
		if d == nil || !sess.established() {
			continue
		}
		key, ok := s.cfg.PSK.Lookup(sess.identity())
		if !ok || keyDigest(key.Bytes()) != *d {
			revoked = append(revoked, sess)
		}
	}
	s.ep.mu.Unlock()
	for _, sess := range revoked {
		s.ep.log.Info("dtls session ended: its key was removed or changed", "peer", sess.addr.String(),
			"identity", sess.identity(), "role", s.ep.opt.role)
		s.ep.remove(sess)
		sess.end(endRevoked)
	}
	return len(revoked)
}

// PeersVerified reports true: a datagram is delivered only from a peer
// that completed a handshake, whose cookie exchange proved its address
// (RFC 6347 §4.2.1), so CoAP responses to it need no amplification bound.
// A resumed handshake has no cookie exchange (pion answers a ClientHello
// offering a cached session with its ServerHello at once), but its peer
// can only complete it by receiving that ServerHello at its address.
func (s *ServerConn) PeersVerified() bool { return true }

// ReadFrom implements net.PacketConn: the next decrypted datagram from any
// session, and the peer's address.
func (s *ServerConn) ReadFrom(p []byte) (int, net.Addr, error) { return s.ep.readFrom(p) }

// WriteTo implements net.PacketConn: p is encrypted to the established
// session with addr. Without one it returns an error matching ErrNoSession.
func (s *ServerConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if s.ep.closed() {
		return 0, s.ep.opError("write", addr, net.ErrClosed)
	}
	sess := s.ep.lookup(addr)
	if sess == nil {
		return 0, s.ep.opError("write", addr, ErrNoSession)
	}
	conn := sess.conn.Load()
	if conn == nil {
		return 0, s.ep.opError("write", addr, ErrNoSession)
	}
	n, err := conn.Write(p)
	if err != nil {
		return n, s.ep.opError("write", addr, err)
	}
	if s.ep.opt.touchOnWrite {
		sess.touch()
	}
	return n, nil
}

// PeerIdentity returns the authenticated identity of the session with addr:
// the PSK identity, or the client certificate's subject CN (its pin when it
// has no CN). ok is false without an established, authenticated session.
func (s *ServerConn) PeerIdentity(addr net.Addr) (string, bool) {
	sess := s.ep.lookup(addr)
	if sess == nil || !sess.established() {
		return "", false
	}
	id := sess.identity()
	return id, id != ""
}

// CloseSession ends the session with addr (sending close_notify) and
// reports whether there was one.
func (s *ServerConn) CloseSession(addr net.Addr) bool { return s.ep.closeSession(addr) }

// Stats returns a snapshot of the counters.
func (s *ServerConn) Stats() Stats { return s.ep.stats.snapshot() }

// Close ends every session (established peers get close_notify), closes
// the socket and waits for all goroutines. It is idempotent.
func (s *ServerConn) Close() error { return s.ep.close() }

// LocalAddr implements net.PacketConn.
func (s *ServerConn) LocalAddr() net.Addr { return s.ep.pc.LocalAddr() }

// SetDeadline implements net.PacketConn; it sets the read deadline (writes
// do not block).
func (s *ServerConn) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (s *ServerConn) SetReadDeadline(t time.Time) error {
	s.ep.rd.Set(t)
	return nil
}

// SetWriteDeadline implements net.PacketConn. Writes to established
// sessions do not block, so it has no effect.
func (s *ServerConn) SetWriteDeadline(time.Time) error { return nil }

var _ net.PacketConn = (*ServerConn)(nil)
