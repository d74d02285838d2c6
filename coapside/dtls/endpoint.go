package dtls

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/coap-mqtt/bridge/coapside/internal/loggate"
)

// datagram is one decrypted application datagram and its sender.
type datagram struct {
	b    []byte
	addr net.Addr
}

// endpointOptions are the resolved limits shared by server and client.
type endpointOptions struct {
	role             string
	log              *slog.Logger
	handshakeTimeout time.Duration
	idleTimeout      time.Duration // <= 0: never expire
	maxHandshakes    int
	maxPerSource     int // handshakes in progress per source address
	maxSessions      int
	queueLen         int
	readQueueLen     int
	readBufferSize   int
	// touchOnWrite counts writes as activity for idle expiry. The server
	// does (a silent observer still receives notifications); the client
	// does not, so a session whose peer has gone quiet (for example a
	// restarted server that forgot it) expires and is dialled again.
	touchOnWrite bool
	// evictUnverified lets a new ClientHello take the handshake slot of
	// the oldest handshake whose peer has not returned its cookie (server).
	evictUnverified bool
}

// dropKind indexes the rate limiter for per-datagram log lines.
type dropKind int

const (
	dropNotDTLS dropKind = iota
	dropUnknownPeer
	dropMalformed
	dropLimit
	dropQueueFull
	dropStaleCookie
	numDropKinds
)

// endpoint owns one datagram socket, its read loop, the session table and
// idle expiry. ServerConn and ClientConn are thin roles over it.
type endpoint struct {
	opt   endpointOptions
	pc    net.PacketConn
	log   *slog.Logger
	stats counters

	ctx    context.Context
	cancel context.CancelFunc

	mu          sync.Mutex
	peers       map[peerKey]*session
	handshaking int
	bySource    map[sourceKey]int // handshakes in progress per source
	closing     bool
	// unverified holds the handshakes (*session) whose peer has not yet
	// returned the HelloVerifyRequest cookie, oldest first.
	unverified list.List

	// resume is the session cache for resumption (nil: disabled).
	resume *resumeCache

	inbound chan datagram
	rd      *deadline
	wd      *deadline

	// onUnknown handles a datagram from an address without a session.
	onUnknown func(b []byte, addr net.Addr, key peerKey)
	// onRehandshake, when set, handles a new ClientHello from the address
	// of an established session.
	onRehandshake func(old *session, b []byte, addr net.Addr)

	wg        sync.WaitGroup // read loop and janitor
	sessWG    sync.WaitGroup // session goroutines
	closeOnce sync.Once
	dropLog   [numDropKinds]loggate.Gate
	failLog   [numFailReasons]loggate.Gate
}

func newEndpoint(pc net.PacketConn, opt endpointOptions) *endpoint {
	ctx, cancel := context.WithCancel(context.Background())
	return &endpoint{
		opt:      opt,
		pc:       pc,
		log:      opt.log,
		ctx:      ctx,
		cancel:   cancel,
		peers:    make(map[peerKey]*session),
		bySource: make(map[sourceKey]int),
		inbound:  make(chan datagram, opt.readQueueLen),
		rd:       newDeadline(),
		wd:       newDeadline(),
	}
}

// start launches the read loop and the idle janitor.
func (ep *endpoint) start() {
	ep.wg.Add(1)
	go ep.readLoop()
	if ep.opt.idleTimeout > 0 {
		ep.wg.Add(1)
		go ep.janitor()
	}
}

func (ep *endpoint) closed() bool { return ep.ctx.Err() != nil }

// readLoop is the only reader of the socket. It never blocks on a session:
// datagrams go to per-peer bounded queues and are dropped (and counted) when
// a queue is full.
func (ep *endpoint) readLoop() {
	defer ep.wg.Done()
	buf := make([]byte, ep.opt.readBufferSize)
	for {
		n, addr, err := ep.pc.ReadFrom(buf)
		if err != nil {
			if ep.closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			ep.stats.readErrors.Add(1)
			ep.log.Debug("dtls socket read error", "err", err)
			select {
			case <-ep.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond): // do not spin on a broken socket
			}
			continue
		}
		if n == 0 || addr == nil {
			continue
		}
		ep.dispatch(buf[:n], addr)
	}
}

// dispatch routes one datagram; b is only valid during the call.
func (ep *endpoint) dispatch(b []byte, addr net.Addr) {
	key := keyOf(addr)
	ep.mu.Lock()
	s := ep.peers[key]
	ep.mu.Unlock()
	if s == nil {
		if isAlert(b) {
			// Most often the close_notify a peer answers the end of its
			// session with, arriving once the session is gone: nothing to
			// answer and no session to miss.
			ep.log.Debug("dtls dropped alert from peer without session", "peer", addr.String(), "role", ep.opt.role)
			return
		}
		ep.onUnknown(b, addr, key)
		return
	}
	if s.established() {
		if cand := s.cand.Load(); cand != nil {
			// A new handshake from this address is running beside the
			// session. Epoch-0 records belong to it alone; epoch >= 1
			// records may be either's (the new Finished or old
			// application data), and each side silently discards what
			// it cannot decrypt (RFC 6347 §4.1.2.7), so both get them.
			cand.observeHandshakeRecord(b)
			ep.deliverTo(cand, b, addr)
			if maxEpoch(b) == 0 {
				return
			}
		} else if ep.onRehandshake != nil && s.isNewHandshake(b) {
			// RFC 6347 §4.2.8: a ClientHello at epoch 0 on an existing
			// association may mean the peer lost its state. The old
			// session stays until the new handshake completes, so a
			// spoofed ClientHello cannot tear it down.
			ep.onRehandshake(s, b, addr)
			return
		}
	} else {
		s.observeHandshakeRecord(b)
	}
	ep.deliverTo(s, b, addr)
}

// deliverTo queues a copy of b for s, counting a drop when s is behind.
func (ep *endpoint) deliverTo(s *session, b []byte, addr net.Addr) {
	b = append([]byte(nil), b...)
	hold := s.hold.Load()
	if hold == nil || s.established() {
		ep.deliverOne(s, b, addr)
		return
	}
	for _, d := range hold.push(b) {
		ep.deliverOne(s, d, addr)
	}
}

func (ep *endpoint) deliverOne(s *session, b []byte, addr net.Addr) {
	if !s.raw.deliver(b) {
		ep.stats.droppedQueueFull.Add(1)
		ep.noteDrop(dropQueueFull, addr, nil)
	}
}

// noteDrop logs a dropped datagram: at Warn at most once a second per kind
// (so a flood cannot flood the log), otherwise at Debug. The counters are
// kept by the callers.
func (ep *endpoint) noteDrop(kind dropKind, addr net.Addr, err error) {
	msg := [...]string{
		dropNotDTLS:     "dtls dropped datagram: not a dtls handshake",
		dropUnknownPeer: "dtls dropped record from peer without session",
		dropMalformed:   "dtls refused malformed client hello",
		dropLimit:       "dtls refused handshake: limit reached",
		dropQueueFull:   "dtls dropped datagram: peer queue full",
		dropStaleCookie: "dtls refused client hello: cookie without handshake in progress",
	}[kind]
	level, suppressed := ep.dropLog[kind].Level()
	if !ep.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []any{"peer", addr.String(), "role", ep.opt.role}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	ep.log.Log(context.Background(), level, msg, attrs...)
}

// noteFailure logs a failed handshake: at Warn at most once a second per
// reason, otherwise at Debug, so that a flood of abandoned handshakes costs
// a bounded number of log lines. The caller counts it.
func (ep *endpoint) noteFailure(s *session, reason FailReason, err error) {
	level, suppressed := ep.failLog[reason].Level()
	if !ep.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []any{"peer", s.addr.String(), "reason", reason.String(), "identity", s.identity(),
		"role", ep.opt.role, "key_used", s.pskKnown.Load(), "err", err}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	ep.log.Log(context.Background(), level, "dtls handshake failed", attrs...)
}

// newSession registers a session for key, enforcing the limits. It returns
// the existing session if there is one.
func (ep *endpoint) newSession(key peerKey, addr net.Addr) (s *session, created bool, err error) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.closing {
		return nil, false, ErrClosed
	}
	if s := ep.peers[key]; s != nil {
		return s, false, nil
	}
	victim, err := ep.perSourceLocked(key)
	if err != nil {
		return nil, false, err
	}
	if victim == nil && (ep.handshaking >= ep.opt.maxHandshakes || len(ep.peers) >= ep.opt.maxSessions) {
		victim = ep.evictLocked()
	}
	if victim == nil && ep.handshaking >= ep.opt.maxHandshakes {
		ep.stats.refusedLimit.Add(1)
		return nil, false, fmt.Errorf("%w: %d handshakes in progress", ErrLimit, ep.handshaking)
	}
	if victim == nil && len(ep.peers) >= ep.opt.maxSessions {
		ep.stats.refusedLimit.Add(1)
		return nil, false, fmt.Errorf("%w: %d sessions", ErrLimit, len(ep.peers))
	}
	s = newSession(ep, key, addr)
	ep.peers[key] = s
	ep.takeSlotLocked(s)
	ep.sessWG.Add(1) // released by the session's run
	if victim != nil {
		victim.end(endEvicted) // does not block or take ep.mu
	}
	return s, true, nil
}

// takeSlotLocked counts s as a handshake in progress and, on a server,
// as waiting for its cookie.
func (ep *endpoint) takeSlotLocked(s *session) {
	s.slot = true
	ep.handshaking++
	ep.bySource[s.key.source()]++
	ep.stats.handshakesActive.Add(1)
	if ep.opt.evictUnverified {
		s.pending = ep.unverified.PushBack(s)
	}
}

// perSourceLocked applies the per-source handshake limit to a new
// handshake from key: below it, nothing; at it, the source's own oldest
// handshake still waiting for its cookie gives up its slot (returned as
// the victim to end), so a flood from one host only churns its own
// handshakes; with none to evict the handshake is refused.
func (ep *endpoint) perSourceLocked(key peerKey) (*session, error) {
	src := key.source()
	n := ep.bySource[src]
	if ep.opt.maxPerSource <= 0 || n < ep.opt.maxPerSource {
		return nil, nil
	}
	for e := ep.unverified.Front(); e != nil; e = e.Next() {
		if s := e.Value.(*session); s.key.source() == src {
			ep.evictSessionLocked(s)
			return s, nil
		}
	}
	ep.stats.refusedLimit.Add(1)
	ep.stats.refusedPerSource.Add(1)
	return nil, fmt.Errorf("%w: %d handshakes in progress from %s", ErrLimit, n, srcString(src))
}

func srcString(k sourceKey) string {
	if k.other != "" {
		return k.other
	}
	return k.ip.String()
}

// evictLocked frees the slot of the oldest handshake whose peer has not
// returned its cookie, so that a spoofed-source flood of ClientHellos can
// never keep a new peer out: an unverified handshake holds its slot only
// until a newer ClientHello needs it. A peer that returns the cookie
// (RFC 6347 §4.2.1) leaves this queue at once and keeps its slot. The
// caller ends the returned session after the table is updated.
func (ep *endpoint) evictLocked() *session {
	e := ep.unverified.Front()
	if e == nil {
		return nil
	}
	s := e.Value.(*session)
	ep.evictSessionLocked(s)
	return s
}

// evictSessionLocked takes the slot and table entry of s, a handshake
// waiting for its cookie; the caller ends it.
func (ep *endpoint) evictSessionLocked(s *session) {
	ep.releaseSlotLocked(s)
	if ep.peers[s.key] == s {
		delete(ep.peers, s.key)
	}
	if s.replaces != nil {
		s.replaces.cand.CompareAndSwap(s, nil)
	}
	ep.stats.handshakesEvicted.Add(1)
}

// releaseSlotLocked undoes takeSlotLocked; it is idempotent.
func (ep *endpoint) releaseSlotLocked(s *session) {
	if s.pending != nil {
		ep.unverified.Remove(s.pending)
		s.pending = nil
	}
	if s.slot {
		s.slot = false
		ep.handshaking--
		if src := s.key.source(); ep.bySource[src] <= 1 {
			delete(ep.bySource, src)
		} else {
			ep.bySource[src]--
		}
		ep.stats.handshakesActive.Add(-1)
	}
}

// cookieReturned marks s as verified: its peer returned the cookie, so its
// slot can no longer be taken by a newer ClientHello.
func (ep *endpoint) cookieReturned(s *session) {
	ep.mu.Lock()
	if s.pending != nil {
		ep.unverified.Remove(s.pending)
		s.pending = nil
	}
	ep.mu.Unlock()
}

// newCandidate registers a handshake that will replace old when it
// completes. It is not in the session table; dispatch routes to it through
// old. Only the handshake limit applies.
func (ep *endpoint) newCandidate(old *session) (*session, error) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.closing {
		return nil, ErrClosed
	}
	if ep.peers[old.key] != old {
		return nil, ErrNoSession
	}
	if old.cand.Load() != nil {
		return nil, fmt.Errorf("%w: handshake already running", ErrLimit)
	}
	victim, err := ep.perSourceLocked(old.key)
	if err != nil {
		return nil, err
	}
	if victim == nil && ep.handshaking >= ep.opt.maxHandshakes {
		if victim = ep.evictLocked(); victim == nil {
			ep.stats.refusedLimit.Add(1)
			return nil, fmt.Errorf("%w: %d handshakes in progress", ErrLimit, ep.handshaking)
		}
	}
	s := newSession(ep, old.key, old.addr)
	s.replaces = old
	old.cand.Store(s) // checked nil above; only this function sets it, under ep.mu
	ep.takeSlotLocked(s)
	ep.sessWG.Add(1) // released by the session's run
	if victim != nil {
		victim.end(endEvicted)
	}
	return s, nil
}

// promote puts a completed replacement handshake in place of the session
// it replaces, which is then ended.
func (ep *endpoint) promote(s *session) {
	old := s.replaces
	ep.mu.Lock()
	if cur := ep.peers[s.key]; cur == old || cur == nil {
		ep.peers[s.key] = s
	}
	ep.mu.Unlock()
	old.cand.CompareAndSwap(s, nil)
	old.end(endReplaced)
	ep.stats.sessionsReplaced.Add(1)
	ep.log.Info("dtls session replaced by new handshake", "peer", s.addr.String(),
		"old_identity", old.identity(), "identity", s.identity())
}

// moved ends prev, whose DTLS session s has just resumed from another
// address: its peer's address changed (a NAT rebinding) and records to the
// old one would go nowhere. Completing the resumption proved knowledge of
// the session's master secret, so this cannot be forced by a third party.
func (ep *endpoint) moved(prev, s *session) {
	if !prev.established() || prev.stopped() {
		return
	}
	ep.remove(prev)
	prev.end(endMoved)
	ep.stats.sessionsMoved.Add(1)
	ep.log.Info("dtls session resumed from a new address", "peer", s.addr.String(),
		"from", prev.addr.String(), "identity", s.identity(), "role", ep.opt.role)
}

// handshakeDone releases the handshake slot of s, unless it was evicted.
func (ep *endpoint) handshakeDone(s *session) {
	ep.mu.Lock()
	ep.releaseSlotLocked(s)
	ep.mu.Unlock()
}

// lookup returns the session for addr, if any.
func (ep *endpoint) lookup(addr net.Addr) *session {
	key := keyOf(addr)
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return ep.peers[key]
}

// remove deletes s from the table if it is still the entry for its key.
// A handshake running beside s from the same address (a peer that closed
// its session and at once handshook again, resuming it) takes its place,
// or its later records would find no session.
func (ep *endpoint) remove(s *session) {
	ep.mu.Lock()
	if ep.peers[s.key] == s {
		if c := s.cand.Load(); c != nil && !c.stopped() {
			ep.peers[s.key] = c
		} else {
			delete(ep.peers, s.key)
		}
	}
	ep.mu.Unlock()
}

// deliverApp hands a decrypted datagram to ReadFrom, waiting while the
// reader is behind; it gives up when the session or endpoint ends.
func (ep *endpoint) deliverApp(d datagram, stop <-chan struct{}) bool {
	select {
	case ep.inbound <- d:
		return true
	case <-stop:
		return false
	case <-ep.ctx.Done():
		return false
	}
}

// readFrom implements net.PacketConn.ReadFrom for both roles.
func (ep *endpoint) readFrom(p []byte) (int, net.Addr, error) {
	if ep.closed() {
		return 0, nil, ep.opError("read", nil, net.ErrClosed)
	}
	select {
	case d := <-ep.inbound:
		return copy(p, d.b), d.addr, nil
	case <-ep.rd.Done():
		return 0, nil, ep.opError("read", nil, os.ErrDeadlineExceeded)
	case <-ep.ctx.Done():
		return 0, nil, ep.opError("read", nil, net.ErrClosed)
	}
}

// opError wraps err the way net does, so callers can use errors.Is with
// net.ErrClosed and os.ErrDeadlineExceeded, and net.Error.Timeout.
func (ep *endpoint) opError(op string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: "dtls", Source: ep.pc.LocalAddr(), Addr: addr, Err: err}
}

// janitor closes sessions idle past idleTimeout.
func (ep *endpoint) janitor() {
	defer ep.wg.Done()
	tick := min(max(ep.opt.idleTimeout/4, 10*time.Millisecond), 30*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ep.ctx.Done():
			return
		case now := <-t.C:
			ep.expireIdle(now)
		}
	}
}

func (ep *endpoint) expireIdle(now time.Time) {
	var idle []*session
	cut := now.Add(-ep.opt.idleTimeout).UnixNano()
	ep.mu.Lock()
	for _, s := range ep.peers {
		if s.established() && s.last.Load() < cut {
			idle = append(idle, s)
		}
	}
	ep.mu.Unlock()
	for _, s := range idle {
		ep.stats.sessionsExpired.Add(1)
		ep.log.Info("dtls session expired", "peer", s.addr.String(), "identity", s.identity(),
			"idle", ep.opt.idleTimeout.String(), "role", ep.opt.role)
		ep.remove(s)
		s.end(endExpired)
	}
}

// closeSession ends the session with addr, if any.
func (ep *endpoint) closeSession(addr net.Addr) bool {
	s := ep.lookup(addr)
	if s == nil {
		return false
	}
	ep.remove(s)
	s.end(endClosed)
	return true
}

// close stops everything and waits for every goroutine. Sessions are closed
// first so that established peers receive close_notify.
func (ep *endpoint) close() error {
	var err error
	ep.closeOnce.Do(func() {
		ep.mu.Lock()
		ep.closing = true
		all := make([]*session, 0, len(ep.peers))
		for _, s := range ep.peers {
			all = append(all, s)
		}
		ep.mu.Unlock()
		for _, s := range all {
			if c := s.cand.Load(); c != nil {
				c.end(endShutdown)
			}
			s.end(endShutdown)
		}
		// Cancelling aborts any handshake not reached above (a
		// replacement whose session already left the table); established
		// sessions still send close_notify, the socket is open until all
		// sessions are done.
		ep.cancel()
		ep.sessWG.Wait()
		err = ep.pc.Close()
		ep.wg.Wait()
	})
	return err
}
