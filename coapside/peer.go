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
	queue    []*outgoing // CONs waiting for an NSTART slot
	lastUsed time.Time
}

// peerTable bounds per-peer state: at most max entries; idle entries expire
// after ttl and the least recently used idle entry is evicted when full.
type peerTable struct {
	mu    sync.Mutex
	peers map[peerKey]*peerState
	max   int
	ttl   time.Duration
	stats *Stats
}

func newPeerTable(max int, ttl time.Duration, stats *Stats) *peerTable {
	return &peerTable{peers: make(map[peerKey]*peerState), max: max, ttl: ttl, stats: stats}
}

// getLocked returns the state for key, creating it (and evicting) as needed.
// The caller holds t.mu.
func (t *peerTable) getLocked(key peerKey, now time.Time) (*peerState, error) {
	if ps, ok := t.peers[key]; ok {
		ps.lastUsed = now
		return ps, nil
	}
	if len(t.peers) >= t.max {
		t.evictLocked(now)
		if len(t.peers) >= t.max {
			return nil, ErrTooManyPeers
		}
	}
	// RFC 7252 §4.4: the initial message ID should be randomized.
	ps := &peerState{key: key, nextMID: uint16(randUint64()), lastUsed: now}
	t.peers[key] = ps
	return ps, nil
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

// sweep drops idle peers past their ttl.
func (t *peerTable) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, ps := range t.peers {
		if ps.inflight == 0 && len(ps.queue) == 0 && now.Sub(ps.lastUsed) > t.ttl {
			delete(t.peers, k)
		}
	}
}

// nextMID returns a fresh message ID for the peer (RFC 7252 §4.4).
func (t *peerTable) nextMID(key peerKey, now time.Time) (uint16, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ps, err := t.getLocked(key, now)
	if err != nil {
		return 0, err
	}
	ps.nextMID++
	return ps.nextMID, nil
}

func (t *peerTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.peers)
}
