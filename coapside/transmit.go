package coapside

import (
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// Outcome is how a transmission ended.
type Outcome uint8

// Transmission outcomes reported by SendAsync.
const (
	// Acknowledged: the peer sent an ACK for the CON (it may carry a piggybacked response).
	Acknowledged Outcome = iota + 1
	// ResetByPeer: the peer answered the CON or NON with RST.
	ResetByPeer
	// TimedOut: a CON was not acknowledged after MAX_RETRANSMIT retransmissions.
	TimedOut
	// NoReply: a NON was not rejected within NON_LIFETIME (the normal NON outcome).
	NoReply
	// Closed: the endpoint closed before the transmission ended.
	Closed
	// Unreachable: the destination answered this or another datagram with
	// ICMP port unreachable: nothing listens there (Linux only).
	Unreachable
)

// String names the outcome.
func (o Outcome) String() string {
	switch o {
	case Acknowledged:
		return "acknowledged"
	case ResetByPeer:
		return "reset"
	case TimedOut:
		return "timeout"
	case NoReply:
		return "no-reply"
	case Closed:
		return "closed"
	case Unreachable:
		return "unreachable"
	}
	return "unknown"
}

// Err maps the outcome to nil or an error.
func (o Outcome) Err() error {
	switch o {
	case ResetByPeer:
		return ErrReset
	case TimedOut:
		return ErrTimeout
	case Closed:
		return ErrClosed
	case Unreachable:
		return ErrUnreachable
	}
	return nil
}

// OutcomeFunc receives the end of a transmission: for Acknowledged, ack is the
// ACK message (which may carry a piggybacked response). It runs on an internal
// goroutine and must not block.
type OutcomeFunc func(o Outcome, ack *message.Message)

const (
	ogQueued uint32 = iota
	ogActive
	ogDone
)

// outgoing is one message we transmit and may retransmit (RFC 7252 §4.2).
type outgoing struct {
	e        *Endpoint
	peer     peerAddr
	key      dedupKey
	data     []byte
	con      bool
	nstart   bool // holds an NSTART slot while active
	yield    bool // a notification: may be given up when the peer table is full
	ps       *peerState
	sentAt   atomic.Int64 // unix ns of the first transmission; 0 before
	attempts int
	timeout  time.Duration
	timer    *timerItem
	cb       OutcomeFunc
	silent   atomic.Bool // set by abandon: no outcome is reported
	state    atomic.Uint32
}

// initialTimeout picks a random timeout in [ACK_TIMEOUT, ACK_TIMEOUT*ACK_RANDOM_FACTOR]
// (RFC 7252 §4.2).
func (e *Endpoint) initialTimeout() time.Duration {
	base := e.p.AckTimeout
	span := float64(base) * (e.p.AckRandomFactor - 1)
	if span <= 0 {
		return base
	}
	return base + time.Duration(rand.Float64()*span)
}

// nstartMode says which messages of a transmission take an NSTART slot.
type nstartMode uint8

const (
	nstartNone    nstartMode = iota // responses: never wait
	nstartCON                       // CONs wait; the slot is freed by ACK, RST or timeout
	nstartRequest                   // CONs and NON requests; a NON's slot is freed by its response or cancel
	nstartNotify                    // as nstartCON, for notifications, which a full peer table may give up (peerTable.yieldLocked)
)

// transmit encodes m for peer with a fresh message ID and sends it. CONs are
// retransmitted until ACK, RST or MAX_RETRANSMIT; mode says whether it waits
// for a free NSTART slot of the peer (RFC 7252 §4.7). noted, when not nil,
// learns the message ID before the datagram is written, so a reply that
// overtakes the write's return still finds what it answers.
func (e *Endpoint) transmit(peer peerAddr, m *message.Message, cb OutcomeFunc, mode nstartMode, noted func(mid uint16)) (*outgoing, error) {
	if e.closing.Load() {
		return nil, ErrClosed
	}
	if m.Type != message.Confirmable && m.Type != message.NonConfirmable {
		return nil, ErrMessageType
	}
	now := time.Now()
	mid, err := e.peers.nextMID(peer.key, now)
	if err != nil {
		return nil, err
	}
	m.MessageID = mid
	data, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if noted != nil {
		noted(mid)
	}
	og := &outgoing{
		e:     e,
		peer:  peer,
		key:   dedupKey{peer: peer.key, mid: mid},
		data:  data,
		con:   m.Type == message.Confirmable,
		cb:    cb,
		yield: mode == nstartNotify,
	}
	// RFC 7252 §4.7: an outstanding interaction is a CON awaiting its ACK or
	// a request awaiting its response. A NON request sent by Exchange holds a
	// slot until its first response arrives or the caller gives up.
	if (og.con && mode != nstartNone) || (mode == nstartRequest && m.Code.IsRequest()) {
		og.nstart = true
		t := e.peers
		t.mu.Lock()
		ps, given, err := t.getLocked(peer.key, now)
		switch {
		case err != nil:
			t.mu.Unlock()
			return nil, err
		case ps.inflight < e.p.NStart:
			ps.inflight++
			ps.active = append(ps.active, og)
			og.ps = ps
		case len(ps.queue) < e.p.MaxQueuePerPeer:
			ps.queue = append(ps.queue, og)
			t.mu.Unlock()
			giveUp(given)
			return og, nil
		default:
			t.mu.Unlock()
			giveUp(given)
			e.stats.QueueOverflows.Add(1)
			e.limits.hit(e.log, LimitPendingPerPeer, peer.netAddr(), "queued", e.p.MaxQueuePerPeer)
			return nil, ErrPeerBusy
		}
		t.mu.Unlock()
		giveUp(given)
	}
	e.start(og)
	return og, nil
}

// start registers og for ACK/RST matching, writes it and arms its timer.
func (e *Endpoint) start(og *outgoing) {
	if !og.state.CompareAndSwap(ogQueued, ogActive) {
		if og.nstart {
			// Abandoned while queued after being handed a slot: pass it on.
			e.releaseNStart(og)
		}
		return
	}
	// Fields read by fire and finish are set before og is published in
	// the pending table (where an ICMP error may finish it at once, see
	// failPeers) and before it enters the scheduler.
	var wait time.Duration
	switch {
	case og.con:
		og.timeout = e.initialTimeout()
		wait = og.timeout
	case og.cb != nil:
		// A NON may be rejected with RST (RFC 7252 §4.3); report NoReply after NON_LIFETIME.
		wait = e.p.NonLifetime
	}
	if wait > 0 {
		og.timer = &timerItem{target: og, index: -1}
	}
	if og.con || og.cb != nil {
		e.mu.Lock()
		if e.pending == nil { // closed
			e.mu.Unlock()
			og.finish(Closed, nil)
			return
		}
		e.pending[og.key] = og
		e.mu.Unlock()
	}
	og.sentAt.Store(time.Now().UnixNano())
	e.write(og.data, &og.peer)
	if og.timer != nil && og.state.Load() == ogActive {
		e.sched.reschedule(og.timer, time.Now().Add(wait))
	}
}

// fire retransmits with exponential back-off or gives up (RFC 7252 §4.2).
func (og *outgoing) fire(now time.Time) {
	if og.state.Load() != ogActive {
		return
	}
	e := og.e
	if !og.con {
		og.untrack()
		og.finish(NoReply, nil)
		return
	}
	if og.attempts >= e.p.MaxRetransmit {
		og.untrack()
		e.stats.Timeouts.Add(1)
		og.finish(TimedOut, nil)
		return
	}
	og.attempts++
	og.timeout *= 2
	e.stats.Retransmissions.Add(1)
	e.write(og.data, &og.peer)
	if og.state.Load() == ogActive {
		e.sched.reschedule(og.timer, now.Add(og.timeout))
	}
}

// untrack removes og from the pending table if it is still there.
func (og *outgoing) untrack() {
	e := og.e
	e.mu.Lock()
	if cur, ok := e.pending[og.key]; ok && cur == og {
		delete(e.pending, og.key)
	}
	e.mu.Unlock()
}

// finish ends the transmission once: stops the timer, frees the NSTART slot
// and reports the outcome.
func (og *outgoing) finish(o Outcome, ack *message.Message) {
	prev := og.state.Swap(ogDone)
	if prev == ogDone {
		return
	}
	if og.timer != nil {
		og.e.sched.cancel(og.timer)
	}
	// The outcome is reported before the slot passes on, so that a
	// callback that gives up on the peer (cancelling what is queued for
	// it) does so before the next queued message is sent.
	if og.cb != nil && !og.silent.Load() {
		og.cb(o, ack)
	}
	if prev == ogActive && og.nstart {
		og.e.releaseNStart(og)
	}
}

// abandon stops a transmission without reporting an outcome (the caller lost
// interest, or a response made the ACK moot, RFC 7252 §5.2.2).
func (og *outgoing) abandon() {
	if og == nil {
		return
	}
	og.silent.Store(true)
	og.untrack()
	og.finish(Closed, nil)
}

// cancel ends a transmission that is no longer wanted, queued or not yet
// acknowledged: it is not (re)transmitted and its callback gets Closed.
func (og *outgoing) cancel() {
	og.untrack()
	og.finish(Closed, nil)
}

// releaseNStart frees og's slot and starts the next queued CON for the peer.
func (e *Endpoint) releaseNStart(og *outgoing) {
	t := e.peers
	t.mu.Lock()
	ps, ok := t.peers[og.peer.key]
	if !ok || ps != og.ps {
		// The peer gave up its entry (yieldLocked): its slots went with it.
		t.mu.Unlock()
		return
	}
	ps.inflight--
	ps.dropActiveLocked(og)
	var next *outgoing
	for len(ps.queue) > 0 && next == nil {
		c := ps.queue[0]
		ps.queue[0] = nil
		ps.queue = ps.queue[1:]
		if c.state.Load() == ogQueued {
			next = c
		}
	}
	if next != nil {
		ps.inflight++
		ps.active = append(ps.active, next)
		next.ps = ps
	}
	// The peer may be idle now, or have only notifications in flight:
	// a full table looks again for an entry to evict or give up.
	t.fullUntil = 0
	ps.lastUsed = time.Now()
	t.mu.Unlock()
	if next != nil {
		e.start(next)
	}
}

// writeRetries is how often a write that failed for an ICMP error queued
// on the socket (which fails the next call whatever its destination) is
// tried again.
const writeRetries = 3

// write sends one datagram to peer, counting errors.
func (e *Endpoint) write(data []byte, peer *peerAddr) {
	var err error
	for try := 0; ; try++ {
		if e.udp != nil && peer.key.str == "" {
			_, err = e.udp.WriteToUDPAddrPort(data, peer.key.ap)
		} else {
			_, err = e.conn.WriteTo(data, peer.netAddr())
		}
		if err == nil || try == writeRetries || !e.queuedError(err) {
			break
		}
	}
	if err != nil {
		e.stats.WriteErrors.Add(1)
		e.log.Debug("coap write failed", "peer", peer.netAddr().String(), "err", err)
		return
	}
	e.stats.Sent.Add(1)
}

// resolvePeer converts a net.Addr given by a caller.
func resolvePeer(a net.Addr) peerAddr { return addrPeer(a) }
