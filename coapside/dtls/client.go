package dtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	pdtls "github.com/pion/dtls/v2"
)

// Credentials authenticate this end to one server and say how to trust it.
type Credentials struct {
	// PSKIdentity and PSK select pre-shared-key authentication.
	PSKIdentity string
	PSK         Secret
	// Certificate is a client certificate (ECDSA) for servers that ask.
	Certificate *tls.Certificate
	// RootCAs verifies the server's certificate chain.
	RootCAs *x509.CertPool
	// Pins accepts a server whose certificate key is pinned, whatever its
	// issuer. With RootCAs also set, either is enough.
	Pins []Pin
	// ServerName, when set, must match the server certificate's DNS names.
	// Devices are usually addressed by IP, so it is empty by default.
	ServerName string
	// InsecureSkipVerify accepts any server certificate. For debugging only.
	InsecureSkipVerify bool
	// CipherSuites overrides the defaults for the configured modes.
	CipherSuites []CipherSuite
	// Name names these credentials for ClientConn.HandshakeWith: a
	// session a write makes records it, so it serves a HandshakeWith for
	// the same name. "" names none.
	Name string
}

func (c *Credentials) psk() bool { return c.PSKIdentity != "" || !c.PSK.IsZero() }

func (c *Credentials) certTrust() bool {
	return c.RootCAs != nil || len(c.Pins) > 0 || c.InsecureSkipVerify
}

// Validate reports credential errors.
func (c *Credentials) Validate() error {
	if c.psk() {
		if c.PSKIdentity == "" || c.PSK.IsZero() {
			return fmt.Errorf("%w: psk needs both identity and key", ErrConfig)
		}
		if len(c.PSKIdentity) > MaxIdentityLen {
			return fmt.Errorf("%w: psk identity longer than %d bytes", ErrConfig, MaxIdentityLen)
		}
	}
	if !c.psk() && !c.certTrust() {
		return fmt.Errorf("%w: credentials need a psk or a way to trust the server certificate", ErrConfig)
	}
	if c.Certificate != nil {
		if err := checkCertificate(c.Certificate); err != nil {
			return err
		}
	}
	return nil
}

// ClientConfig configures a ClientConn.
type ClientConfig struct {
	// Credentials are used for every server unless CredentialsFor is set.
	Credentials Credentials
	// CredentialsFor, when set, picks credentials per server address (one
	// ClientConn can then reach many devices with their own keys).
	CredentialsFor func(addr net.Addr) (Credentials, error)
	// Now is the clock for certificate validity. Default time.Now.
	Now func() time.Time
	// DeadAfter presumes a session dead when this end has written to it and
	// heard nothing back for this long; the next write handshakes again. A
	// server that restarted silently ignores records of the old session
	// (RFC 6347 §4.1.2.7), so without this a request would keep failing
	// until IdleTimeout. Default 30s; negative disables.
	DeadAfter time.Duration
	// RetryBackoff makes writes to a server whose handshake just failed
	// return that failure at once for this long, instead of starting a
	// handshake per CoAP retransmission. Default 2s; negative disables.
	RetryBackoff time.Duration
	// SessionCache, when set, holds the sessions this client can resume
	// instead of a cache of its own (Limits.ResumeSessions and
	// ResumeLifetime are then the cache's): they outlive the ClientConn, so
	// a client that closes its socket and opens a new one on the same
	// credentials (a device waking from sleep) resumes with an abbreviated
	// handshake.
	SessionCache *ClientSessionCache

	Limits
}

// ClientSessionCache is a cache of resumable client sessions, by server
// address, that can be shared by ClientConns one after the other (or at
// once). It is safe for concurrent use.
type ClientSessionCache struct{ c *resumeCache }

// NewClientSessionCache returns a cache of at most max sessions (least
// recently used out first; max <= 0 means DefaultResumeSessions), each
// resumable for lifetime after its full handshake (<= 0 means
// DefaultResumeLifetime).
func NewClientSessionCache(max int, lifetime time.Duration) *ClientSessionCache {
	if max <= 0 {
		max = DefaultResumeSessions
	}
	if lifetime <= 0 {
		lifetime = DefaultResumeLifetime
	}
	return &ClientSessionCache{c: newResumeCache(max, lifetime, time.Now)}
}

// Len returns how many sessions the cache holds.
func (sc *ClientSessionCache) Len() int { return sc.c.len() }

// Validate reports configuration errors.
func (c *ClientConfig) Validate() error {
	if c.CredentialsFor != nil {
		return nil
	}
	return c.Credentials.Validate()
}

// ClientConn is a net.PacketConn that speaks DTLS to servers: WriteTo to an
// address without a session performs a handshake first (concurrent writers
// to the same address share it), later writes reuse the session, and replies
// arrive on ReadFrom. It is safe for concurrent use.
type ClientConn struct {
	ep  *endpoint
	cfg ClientConfig

	failMu sync.Mutex
	failed map[failKey]recentFailure
}

// failKey is what a failed handshake is remembered by: the server's
// address and the name of the credentials it failed with (see
// HandshakeWith), so other credentials for the address are tried at once.
type failKey struct {
	peer peerKey
	cred string
}

// recentFailure is a failed handshake remembered for RetryBackoff.
type recentFailure struct {
	err   error
	until time.Time
}

// maxRecentFailures bounds the failure memory; expired entries are pruned
// when it is reached.
const maxRecentFailures = 1024

func (c *ClientConn) recentFailure(key failKey) error {
	if c.cfg.RetryBackoff <= 0 {
		return nil
	}
	c.failMu.Lock()
	defer c.failMu.Unlock()
	f, ok := c.failed[key]
	if !ok {
		return nil
	}
	if time.Now().After(f.until) {
		delete(c.failed, key)
		return nil
	}
	return f.err
}

func (c *ClientConn) rememberFailure(key failKey, err error) {
	if c.cfg.RetryBackoff <= 0 {
		return
	}
	now := time.Now()
	c.failMu.Lock()
	defer c.failMu.Unlock()
	if len(c.failed) >= maxRecentFailures {
		for k, f := range c.failed {
			if now.After(f.until) {
				delete(c.failed, k)
			}
		}
		if len(c.failed) >= maxRecentFailures {
			return
		}
	}
	c.failed[key] = recentFailure{err: err, until: now.Add(c.cfg.RetryBackoff)}
}

// NewClientConn opens a UDP socket on localAddr ("" means any address and
// port) and returns a client over it.
func NewClientConn(localAddr string, cfg ClientConfig) (*ClientConn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if localAddr == "" {
		localAddr = ":0"
	}
	pc, err := net.ListenPacket("udp", localAddr)
	if err != nil {
		return nil, fmt.Errorf("dtls: client socket: %w", err)
	}
	c, err := NewClientConnOn(pc, cfg)
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	return c, nil
}

// NewClientConnOn runs a client over pc and takes ownership of it.
func NewClientConnOn(pc net.PacketConn, cfg ClientConfig) (*ClientConn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Limits.setDefaults()
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = 30 * time.Second
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &ClientConn{cfg: cfg, failed: make(map[failKey]recentFailure)}
	c.ep = newEndpoint(pc, cfg.endpointOptions(roleClient, false))
	if cfg.SessionCache != nil {
		c.ep.resume = cfg.SessionCache.c
	} else {
		c.ep.resume = newResumeCache(cfg.ResumeSessions, cfg.ResumeLifetime, time.Now)
	}
	c.ep.onUnknown = func(b []byte, addr net.Addr, _ peerKey) {
		c.ep.stats.droppedUnknown.Add(1)
		c.ep.noteDrop(dropUnknownPeer, addr, nil)
	}
	c.ep.start()
	return c, nil
}

// credentials resolves the credentials for addr.
func (c *ClientConn) credentials(addr net.Addr) (Credentials, error) {
	if c.cfg.CredentialsFor == nil {
		return c.cfg.Credentials, nil
	}
	cr, err := c.cfg.CredentialsFor(addr)
	if err != nil {
		return Credentials{}, err
	}
	if err := cr.Validate(); err != nil {
		return Credentials{}, err
	}
	return cr, nil
}

// session returns the session with addr, dialling one if needed with the
// credentials CredentialsFor picks, and waits for its handshake.
func (c *ClientConn) session(ctx context.Context, addr net.Addr) (*session, *pdtls.Conn, error) {
	return c.sessionWith(ctx, addr, "", nil)
}

// sessionWith is session; a session it dials is made with creds (nil:
// CredentialsFor) and records key.
func (c *ClientConn) sessionWith(ctx context.Context, addr net.Addr, key string, creds func() (Credentials, error)) (*session, *pdtls.Conn, error) {
	ep := c.ep
	s := ep.lookup(addr)
	if s != nil && s.presumedDead(c.cfg.DeadAfter) {
		ep.stats.sessionsDead.Add(1)
		ep.log.Info("dtls session presumed dead: no answer", "peer", addr.String(),
			"silent_for", c.cfg.DeadAfter.String(), "role", ep.opt.role)
		ep.remove(s)
		s.end(endDead)
		s = nil
	}
	if s == nil {
		if err := c.recentFailure(failKey{keyOf(addr), key}); err != nil {
			ep.stats.backoffRefusals.Add(1)
			return nil, nil, err
		}
		var cr Credentials
		var err error
		if creds != nil {
			if cr, err = creds(); err == nil {
				err = cr.Validate()
			}
		} else {
			cr, err = c.credentials(addr)
		}
		if err != nil {
			return nil, nil, err
		}
		var created bool
		s, created, err = ep.newSession(keyOf(addr), addr)
		if err != nil {
			return nil, nil, err
		}
		if created {
			if key == "" {
				key = cr.Name // a session made by a write: its credentials' own name
			}
			s.credKey.Store(&key)
			if c.ep.resume != nil {
				s.hold.Store(&flightHold{}) // the read loop may already see s
			}
			cfg := c.sessionConfig(s, &cr)
			go s.run(func(ctx context.Context, raw net.Conn) (*pdtls.Conn, error) {
				return pdtls.ClientWithContext(ctx, raw, cfg)
			})
		}
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case <-ep.wd.Done():
		return nil, nil, ep.opError("write", addr, errWriteTimeout)
	case <-ep.ctx.Done():
		return nil, nil, ep.opError("write", addr, net.ErrClosed)
	}
	if s.err != nil {
		var he *HandshakeError
		if errors.As(s.err, &he) && !ep.closed() && endReason(s.why.Load()) == endNone {
			c.rememberFailure(failKey{s.key, s.credentialsName()}, s.err)
		}
		return nil, nil, s.err
	}
	conn := s.conn.Load()
	if conn == nil { // ended right after the handshake
		return nil, nil, ep.opError("write", addr, ErrNoSession)
	}
	return s, conn, nil
}

// errWriteTimeout is a net.Error with Timeout() true for a write deadline
// that passed while waiting for a handshake.
var errWriteTimeout = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string   { return "dtls: write deadline exceeded during handshake" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Unwrap() error   { return context.DeadlineExceeded }

// sessionConfig is the pion config for one handshake with cr.
func (c *ClientConn) sessionConfig(sess *session, cr *Credentials) *pdtls.Config {
	psk, certs := cr.psk(), cr.certTrust()
	cfg := &pdtls.Config{
		CipherSuites:         suitesFor(cr.CipherSuites, psk, certs),
		ExtendedMasterSecret: pdtls.RequestExtendedMasterSecret,
		FlightInterval:       c.cfg.FlightInterval,
		MTU:                  c.cfg.MTU,
		LoggerFactory:        pionLogs{log: c.cfg.Logger},
	}
	if psk {
		key := cr.PSK.Bytes()
		cfg.PSKIdentityHint = []byte(cr.PSKIdentity)
		cfg.PSK = func([]byte) ([]byte, error) {
			sess.pskKnown.Store(true)
			return key, nil
		}
		sess.setIdentity(cr.PSKIdentity)
	}
	if cr.Certificate != nil {
		cfg.Certificates = []tls.Certificate{*cr.Certificate}
	}
	if c.ep.resume != nil {
		// pion keys the cache by server address: a ClientHello to the same
		// server offers the session, and a server that still has it
		// answers with the abbreviated handshake.
		binding, roots := credentialsDigest(cr), cr.RootCAs
		cfg.SessionStore = &sessionStore{
			cache: c.ep.resume,
			sess:  sess,
			valid: func(e *resumeEntry) bool { return e.binding == binding && e.roots.Equal(roots) },
			bind:  func(e *resumeEntry) { e.psk, e.binding, e.roots = psk, binding, roots },
		}
	}
	if certs {
		// Chain and pin checks run in VerifyPeerCertificate; pion still
		// verifies the ServerKeyExchange signature with the certificate key.
		cfg.InsecureSkipVerify = true
		if !cr.InsecureSkipVerify {
			v := newCertVerifier(cr.RootCAs, cr.Pins, x509.ExtKeyUsageServerAuth, cr.ServerName, c.cfg.Now)
			cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
				leaf, err := v.verify(raw)
				if err != nil {
					sess.certFailed.Store(true)
					return err
				}
				sess.setIdentity(certIdentity(leaf))
				return nil
			}
		}
	}
	return cfg
}

// Handshake establishes (or reuses) the session with addr without sending
// data, bounded by ctx.
func (c *ClientConn) Handshake(ctx context.Context, addr net.Addr) error {
	_, _, err := c.session(ctx, addr)
	return err
}

// HandshakeWith is Handshake for a session made with the credentials named
// key, an opaque name the caller gives them (a digest of a device's key
// and trust settings, say): a session with addr made with other
// credentials, or by a write, is ended first and made again with creds,
// so a changed key, CA or pin, or another device at the address, is never
// served by the old session. creds is called only for a new handshake.
func (c *ClientConn) HandshakeWith(ctx context.Context, addr net.Addr, key string, creds func() (Credentials, error)) error {
	const tries = 3 // a caller wanting other credentials may end ours meanwhile
	for range tries {
		if s := c.ep.lookup(addr); s != nil && !s.madeWith(key) {
			c.ep.log.Info("dtls session ended: credentials changed", "peer", addr.String(), "role", c.ep.opt.role)
			c.ep.remove(s)
			s.end(endRekeyed)
		}
		s, _, err := c.sessionWith(ctx, addr, key, creds)
		switch {
		case err == nil && s.madeWith(key):
			return nil
		case err == nil, errors.Is(err, errSessionRekeyed):
			continue
		default:
			return err
		}
	}
	return fmt.Errorf("dtls: session with %s: %w", addr, errRekeyed)
}

// errRekeyed: callers wanting other credentials for one address kept
// ending each other's sessions.
var errRekeyed = errors.New("other credentials for this address kept replacing the session")

// WriteTo implements net.PacketConn. Without a session to addr it first
// performs a handshake, bounded by HandshakeTimeout and the write deadline;
// a failed handshake returns a *HandshakeError.
func (c *ClientConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	for attempt := 0; ; attempt++ {
		if c.ep.closed() {
			return 0, c.ep.opError("write", addr, net.ErrClosed)
		}
		sess, conn, err := c.session(context.Background(), addr)
		if err != nil {
			return 0, err
		}
		sess.noteWrite()
		n, err := conn.Write(p)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, pdtls.ErrConnClosed) {
			return n, c.ep.opError("write", addr, err)
		}
		// The server closed the session (close_notify) and it is being
		// torn down: drop it and dial a fresh one, once.
		c.ep.remove(sess)
		sess.end(endClosed)
		if attempt > 0 {
			return n, c.ep.opError("write", addr, ErrNoSession)
		}
	}
}

// ReadFrom implements net.PacketConn: the next decrypted datagram from any
// server and its address.
func (c *ClientConn) ReadFrom(p []byte) (int, net.Addr, error) { return c.ep.readFrom(p) }

// PeerIdentity returns the identity of the session with addr: the server
// certificate's CN (or pin), or for PSK the identity this end presented.
func (c *ClientConn) PeerIdentity(addr net.Addr) (string, bool) {
	sess := c.ep.lookup(addr)
	if sess == nil || !sess.established() {
		return "", false
	}
	id := sess.identity()
	return id, id != ""
}

// CloseSession ends the session with addr (sending close_notify); the next
// WriteTo handshakes again. Use it when a peer stops answering, since a
// server that restarted silently ignores records of the old session.
func (c *ClientConn) CloseSession(addr net.Addr) bool { return c.ep.closeSession(addr) }

// Stats returns a snapshot of the counters.
func (c *ClientConn) Stats() Stats { return c.ep.stats.snapshot() }

// Close ends every session, closes the socket and waits for all goroutines.
// It is idempotent.
func (c *ClientConn) Close() error { return c.ep.close() }

// LocalAddr implements net.PacketConn.
func (c *ClientConn) LocalAddr() net.Addr { return c.ep.pc.LocalAddr() }

// SetDeadline implements net.PacketConn.
func (c *ClientConn) SetDeadline(t time.Time) error {
	c.ep.rd.Set(t)
	c.ep.wd.Set(t)
	return nil
}

// SetReadDeadline implements net.PacketConn.
func (c *ClientConn) SetReadDeadline(t time.Time) error {
	c.ep.rd.Set(t)
	return nil
}

// SetWriteDeadline implements net.PacketConn. It bounds the wait for a
// handshake in WriteTo.
func (c *ClientConn) SetWriteDeadline(t time.Time) error {
	c.ep.wd.Set(t)
	return nil
}

var _ net.PacketConn = (*ClientConn)(nil)
