package coapside

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// peerKey identifies a remote endpoint. UDP addresses use the (unmapped)
// address and port without allocation; other net.Addr kinds use their string.
type peerKey struct {
	ap  netip.AddrPort
	str string
}

// peerAddr is a remote endpoint as seen by the read loop.
type peerAddr struct {
	key  peerKey
	addr net.Addr // nil on the UDP fast path until materialized
}

func udpPeer(ap netip.AddrPort) peerAddr {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return peerAddr{key: peerKey{ap: ap}}
}

func addrPeer(a net.Addr) peerAddr {
	if u, ok := a.(*net.UDPAddr); ok {
		p := udpPeer(u.AddrPort())
		p.addr = a
		return p
	}
	return peerAddr{key: peerKey{str: a.Network() + "|" + a.String()}, addr: a}
}

// netAddr returns the peer as a net.Addr, allocating a *net.UDPAddr on the
// fast path.
func (p *peerAddr) netAddr() net.Addr {
	if p.addr == nil {
		p.addr = net.UDPAddrFromAddrPort(p.key.ap)
	}
	return p.addr
}

// peerState holds per-peer message-layer state: the next message ID and the
// NSTART accounting (RFC 7252 §4.4, §4.7).
type peerState struct {
	key      peerKey
	nextMID  uint16
	inflight int         // CONs awaiting ACK/RST/timeout
	active   []*outgoing // the transmissions holding those slots
	queue    []*outgoing // CONs waiting for an NSTART slot
	lastUsed time.Time
}

// peerTable bounds per-peer state: at most max entries; idle entries expire
// after ttl and the least recently used idle entry is evicted when full.
// When no entry is idle, a peer whose only traffic is notifications
// unacknowledged for yieldAfter gives up its entry (yieldLocked).
//
// A table that grows (an endpoint without a server, whose entries are all
// made by its own requests) admits a peer past max when every entry has
// traffic in flight, instead of refusing it: its size is then bounded by
// the requests its owner has outstanding, not by peers that write to it.
// Past max, a new peer evicts an idle entry as in any table, and idle
// entries go after ttl.
type peerTable struct {
	mu    sync.Mutex
	peers map[peerKey]*peerState
	max   int
	ttl   time.Duration
	stats *Stats
	grow  bool
	// scanAt, in a table that grows, is the size past max at which the
	// next new peer looks for an idle entry to evict: doubled after a
	// scan that found none, so admitting peers stays linear overall.
	scanAt int

	yieldAfter time.Duration
	// fullUntil (unix ns), when set, is when the table, full with no
	// entry to evict or give up, is looked at again: until then a new
	// peer is refused without a scan. It is the time the first peer may
	// be given up, and at most fullRecheck ahead, since a peer whose
	// exchanges end becomes evictable at any moment.
	fullUntil int64
}

// fullRecheck bounds how long a full table refuses new peers without
// looking for an entry again: a storm of new peers costs at most one scan
// per interval, and a peer that went idle meanwhile is found soon.
const fullRecheck = 100 * time.Millisecond

func newPeerTable(max int, ttl, yieldAfter time.Duration, stats *Stats) *peerTable {
	return &peerTable{peers: make(map[peerKey]*peerState), max: max, ttl: ttl, yieldAfter: yieldAfter, stats: stats}
}

// getLocked returns the state for key, creating it (and evicting) as needed.
// given lists the transmissions of a peer that gave up its entry: the
// caller ends them with giveUp once it has released t.mu. The caller holds
// t.mu.
func (t *peerTable) getLocked(key peerKey, now time.Time) (ps *peerState, given []*outgoing, err error) {
	if ps, ok := t.peers[key]; ok {
		ps.lastUsed = now
		return ps, nil, nil
	}
	if t.grow && len(t.peers) >= t.max {
		if len(t.peers) >= t.scanAt {
			before := len(t.peers)
			t.evictLocked(now)
			if len(t.peers) < before {
				t.scanAt = t.max
			} else {
				t.scanAt = 2 * before
			}
		}
	} else if len(t.peers) >= t.max {
		if now.UnixNano() < t.fullUntil {
			return nil, nil, ErrTooManyPeers
		}
		t.evictLocked(now)
		if len(t.peers) >= t.max {
			if given = t.yieldLocked(now); given == nil {
				return nil, nil, ErrTooManyPeers
			}
		}
	}
	// RFC 7252 §4.4: the initial message ID should be randomized.
	ps = &peerState{key: key, nextMID: uint16(randUint64()), lastUsed: now}
	t.peers[key] = ps
	return ps, given, nil
}

// yieldLocked frees the entry of a peer whose every transmission is a
// notification that has gone unacknowledged for yieldAfter, the oldest
// first, and returns its transmissions to give up. RFC 7252 §4.2 lets a
// sender give up on a CON before MAX_RETRANSMIT; an observer that has
// acknowledged none of the (at least three) transmissions of a
// notification by then is treated as one whose notification timed out
// (RFC 7641 §4.5): it is removed, and a client that is in fact alive
// registers again when its Max-Age runs out (§3.3.1). Without it the table,
// full of observers that went away without a word, would admit one new
// peer per MAX_TRANSMIT_WAIT per entry. When no peer qualifies, it sets
// fullUntil to when the first may (at most fullRecheck ahead), and returns
// nil.
func (t *peerTable) yieldLocked(now time.Time) []*outgoing {
	if t.yieldAfter <= 0 {
		return nil
	}
	var victim *peerState
	var victimSent int64
	soonest := int64(1<<63 - 1)
	limit := now.UnixNano() - int64(t.yieldAfter)
	for _, ps := range t.peers {
		sent, ok := ps.yieldable()
		if !ok {
			continue
		}
		if sent > limit {
			soonest = min(soonest, sent+int64(t.yieldAfter))
			continue
		}
		if victim == nil || sent < victimSent {
			victim, victimSent = ps, sent
		}
	}
	if victim == nil {
		t.fullUntil = min(soonest, now.UnixNano()+int64(fullRecheck))
		return nil
	}
	delete(t.peers, victim.key)
	given := append(victim.active, victim.queue...)
	victim.active, victim.queue, victim.inflight = nil, nil, 0
	t.stats.PeerYields.Add(1)
	return given
}

// yieldable reports whether every transmission of ps is a notification
// that may be given up, and when the most recent of those in flight was
// first sent (unix ns).
func (ps *peerState) yieldable() (sent int64, ok bool) {
	if len(ps.active) == 0 {
		return 0, false
	}
	for _, og := range ps.queue {
		if !og.yield {
			return 0, false
		}
	}
	for _, og := range ps.active {
		s := og.sentAt.Load()
		if !og.yield || s == 0 {
			return 0, false
		}
		sent = max(sent, s)
	}
	return sent, true
}

// dropActiveLocked removes og from the transmissions holding a slot of ps.
func (ps *peerState) dropActiveLocked(og *outgoing) {
	for i, a := range ps.active {
		if a == og {
			last := len(ps.active) - 1
			ps.active[i] = ps.active[last]
			ps.active[last] = nil
			ps.active = ps.active[:last]
			return
		}
	}
}

// evictLocked removes expired idle peers, or else the least recently used idle one.
func (t *peerTable) evictLocked(now time.Time) {
	var lru *peerState
	removed := false
	for k, ps := range t.peers {
		if ps.inflight > 0 || len(ps.queue) > 0 {
			continue
		}
		if now.Sub(ps.lastUsed) > t.ttl {
			delete(t.peers, k)
			removed = true
			continue
		}
		if lru == nil || ps.lastUsed.Before(lru.lastUsed) {
			lru = ps
		}
	}
	if !removed && lru != nil {
		delete(t.peers, lru.key)
		t.stats.PeerEvictions.Add(1)
	}
}

// giveUp ends the transmissions of a peer that gave up its entry as
// unacknowledged: their callbacks see TimedOut.
func giveUp(given []*outgoing) {
	for _, og := range given {
		og.untrack()
		og.finish(TimedOut, nil)
	}
}

// sweep drops idle peers past their ttl.
func (t *peerTable) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.scanAt = t.max
	for k, ps := range t.peers {
		if ps.inflight == 0 && len(ps.queue) == 0 && now.Sub(ps.lastUsed) > t.ttl {
			delete(t.peers, k)
		}
	}
}

// nextMID returns a fresh message ID for the peer (RFC 7252 §4.4).
func (t *peerTable) nextMID(key peerKey, now time.Time) (uint16, error) {
	t.mu.Lock()
	ps, given, err := t.getLocked(key, now)
	var mid uint16
	if err == nil {
		ps.nextMID++
		mid = ps.nextMID
	}
	t.mu.Unlock()
	giveUp(given)
	return mid, err
}

func (t *peerTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.peers)
}

// notifyYieldAfter is how long a notification goes unacknowledged before a
// full peer table may give it up: 3 × ACK_TIMEOUT × ACK_RANDOM_FACTOR, by
// which time it has been sent three times (RFC 7252 §4.2: retransmissions
// at T and 3T for an initial timeout T of at most ACK_TIMEOUT ×
// ACK_RANDOM_FACTOR).
func notifyYieldAfter(p params) time.Duration {
	return time.Duration(3 * float64(p.AckTimeout) * max(p.AckRandomFactor, 1))
}
