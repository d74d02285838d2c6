package coapside

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

// TestPeerTableFullRecoversWhenPeersGoIdle: a table full of peers with
// exchanges in flight that cannot be given up (requests, not
// notifications) refuses a new peer, and admits one soon after a peer's
// exchange ended, not never.
func TestPeerTableFullRecoversWhenPeersGoIdle(t *testing.T) {
	var stats Stats
	tab := newPeerTable(2, time.Minute, time.Second, &stats)
	now := time.Unix(1000, 0)
	key := func(i int) peerKey {
		return peerKey{ap: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 5683)}
	}
	var busy []*peerState
	for i := range 2 {
		ps, _, err := tab.getLocked(key(i), now)
		if err != nil {
			t.Fatal(err)
		}
		og := &outgoing{} // a request: never given up
		og.sentAt.Store(now.UnixNano())
		ps.active, ps.inflight = []*outgoing{og}, 1
		busy = append(busy, ps)
	}
	if _, _, err := tab.getLocked(key(9), now); !errors.Is(err, ErrTooManyPeers) {
		t.Fatalf("a third peer with two busy: %v, want ErrTooManyPeers", err)
	}
	// The first peer's exchange ends: it is idle, and evictable.
	busy[0].active, busy[0].inflight = nil, 0
	later := now.Add(time.Second)
	if _, _, err := tab.getLocked(key(9), later); err != nil {
		t.Fatalf("a new peer a second after another went idle: %v", err)
	}
	if stats.PeerEvictions.Load() != 1 {
		t.Fatalf("evictions %d, want 1", stats.PeerEvictions.Load())
	}
}
