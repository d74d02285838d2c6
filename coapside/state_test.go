package coapside

import (
	"net/netip"
	"testing"
	"time"
)

func keyN(i int) peerKey {
	return peerKey{ap: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+i))}
}

func TestDedupTable(t *testing.T) {
	var st Stats
	d := newDedupTable(4, &st)
	now := time.Unix(1000, 0)
	k := dedupKey{peer: keyN(1), mid: 7}
	ref, res, _ := d.begin(k, now, time.Minute, nil)
	if res != dedupNew {
		t.Fatalf("first = %v", res)
	}
	if _, res, _ := d.begin(k, now, time.Minute, nil); res != dedupDupBusy {
		t.Fatalf("in-progress duplicate = %v", res)
	}
	d.complete(ref, []byte{1, 2, 3})
	_, res, cached := d.begin(k, now.Add(time.Second), time.Minute, nil)
	if res != dedupDupReplay || string(cached) != "\x01\x02\x03" {
		t.Fatalf("completed duplicate = %v %x", res, cached)
	}
	// Same MID from another peer is a different message.
	if _, res, _ := d.begin(dedupKey{peer: keyN(2), mid: 7}, now, time.Minute, nil); res != dedupNew {
		t.Fatalf("other peer = %v", res)
	}
	// After the lifetime the MID is new again.
	if _, res, _ := d.begin(k, now.Add(2*time.Minute), time.Minute, nil); res != dedupNew {
		t.Fatalf("expired = %v", res)
	}
}

func TestDedupTableBoundedWithCountedEvictions(t *testing.T) {
	var st Stats
	d := newDedupTable(8, &st)
	now := time.Unix(1000, 0)
	for i := range 20 {
		d.begin(dedupKey{peer: keyN(0), mid: uint16(i)}, now, time.Hour, nil)
	}
	if n := d.len(); n != 8 {
		t.Fatalf("len = %d, want 8", n)
	}
	if got := st.DedupEvictions.Load(); got != 12 {
		t.Fatalf("evictions = %d, want 12", got)
	}
	// The newest entries are kept, the oldest evicted.
	if _, res, _ := d.begin(dedupKey{peer: keyN(0), mid: 19}, now, time.Hour, nil); res == dedupNew {
		t.Fatal("newest entry evicted")
	}
	if _, res, _ := d.begin(dedupKey{peer: keyN(0), mid: 0}, now, time.Hour, nil); res != dedupNew {
		t.Fatal("oldest entry kept")
	}
	// Expired entries are reclaimed without counting evictions.
	before := st.DedupEvictions.Load()
	later := now.Add(2 * time.Hour)
	for i := range 8 {
		d.begin(dedupKey{peer: keyN(1), mid: uint16(i)}, later, time.Hour, nil)
	}
	if st.DedupEvictions.Load() != before {
		t.Fatal("expired entries counted as evictions")
	}
}

func TestDedupStaleCompleteIgnored(t *testing.T) {
	var st Stats
	d := newDedupTable(1, &st)
	now := time.Unix(1000, 0)
	ref, _, _ := d.begin(dedupKey{peer: keyN(0), mid: 1}, now, time.Hour, nil)
	d.begin(dedupKey{peer: keyN(0), mid: 2}, now, time.Hour, nil) // evicts slot of mid 1
	d.complete(ref, []byte{9})                                    // must not attach to mid 2
	if _, res, _ := d.begin(dedupKey{peer: keyN(0), mid: 2}, now, time.Hour, nil); res != dedupDupBusy {
		t.Fatalf("stale complete leaked into reused slot: %v", res)
	}
}

func TestPeerTableBounded(t *testing.T) {
	var st Stats
	pt := newPeerTable(3, time.Minute, time.Minute, &st)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if _, err := pt.nextMID(keyN(i), now.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	// Full of recently used peers: the least recently used one is evicted.
	if _, err := pt.nextMID(keyN(9), now.Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if pt.len() != 3 || st.PeerEvictions.Load() != 1 {
		t.Fatalf("len %d evictions %d", pt.len(), st.PeerEvictions.Load())
	}
	pt.mu.Lock()
	_, kept0 := pt.peers[keyN(0)]
	pt.mu.Unlock()
	if kept0 {
		t.Fatal("LRU peer not evicted")
	}
	// Peers with CONs in flight are never evicted.
	pt.mu.Lock()
	for _, ps := range pt.peers {
		ps.inflight = 1
	}
	pt.mu.Unlock()
	if _, err := pt.nextMID(keyN(10), now.Add(6*time.Second)); err != ErrTooManyPeers {
		t.Fatalf("err = %v, want ErrTooManyPeers", err)
	}
	// Idle peers past the ttl are swept.
	pt.mu.Lock()
	for _, ps := range pt.peers {
		ps.inflight = 0
	}
	pt.mu.Unlock()
	pt.sweep(now.Add(time.Hour))
	if pt.len() != 0 {
		t.Fatalf("sweep left %d", pt.len())
	}
}

func TestMessageIDsSequentialPerPeer(t *testing.T) {
	var st Stats
	pt := newPeerTable(10, time.Minute, time.Minute, &st)
	now := time.Unix(1000, 0)
	a1, _ := pt.nextMID(keyN(1), now)
	a2, _ := pt.nextMID(keyN(1), now)
	if a2 != a1+1 {
		t.Fatalf("MIDs %d, %d not sequential", a1, a2)
	}
}

func TestNormalizeDerivedTimes(t *testing.T) {
	p := EndpointOptions{}.normalize()
	// RFC 7252 §4.8.2 with defaults: MAX_TRANSMIT_SPAN 45 s, MAX_TRANSMIT_WAIT 93 s,
	// EXCHANGE_LIFETIME 247 s, NON_LIFETIME 145 s.
	if p.maxTransmitSpan != 45*time.Second || p.maxTransmitWait != 93*time.Second {
		t.Fatalf("span %v wait %v", p.maxTransmitSpan, p.maxTransmitWait)
	}
	if p.ExchangeLifetime != 247*time.Second || p.NonLifetime != 145*time.Second {
		t.Fatalf("exchange %v non %v", p.ExchangeLifetime, p.NonLifetime)
	}
	if p.NStart != 1 || p.MaxRetransmit != 4 || p.AckTimeout != 2*time.Second {
		t.Fatalf("defaults %+v", p.EndpointOptions)
	}
}

func TestInitialTimeoutWithinRandomFactor(t *testing.T) {
	e := &Endpoint{p: EndpointOptions{AckTimeout: time.Second, AckRandomFactor: 1.5}.normalize()}
	for range 200 {
		d := e.initialTimeout()
		if d < time.Second || d > 1500*time.Millisecond {
			t.Fatalf("initial timeout %v outside [1s, 1.5s]", d)
		}
	}
}

// TestPeerTableGrows: a client's table admits peers past max while every
// entry is in flight; once they are idle, each new peer evicts one and the
// sweep removes them after their ttl.
func TestPeerTableGrows(t *testing.T) {
	var st Stats
	pt := newPeerTable(3, time.Minute, time.Minute, &st)
	pt.grow = true
	now := time.Unix(1000, 0)
	busy := func() {
		pt.mu.Lock()
		for _, ps := range pt.peers {
			ps.inflight = 1
		}
		pt.mu.Unlock()
	}
	for i := range 10 {
		if _, err := pt.nextMID(keyN(i), now.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
		busy()
	}
	if pt.len() != 10 {
		t.Fatalf("len %d, want 10", pt.len())
	}
	// All idle again: the sweep, before their ttl, keeps them; the next
	// new peers each evict the least recently used.
	pt.mu.Lock()
	for _, ps := range pt.peers {
		ps.inflight = 0
	}
	pt.mu.Unlock()
	pt.sweep(now.Add(20 * time.Second))
	for i := 10; i < 15; i++ {
		if _, err := pt.nextMID(keyN(i), now.Add(20*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if pt.len() != 10 || st.PeerEvictions.Load() != 5 {
		t.Fatalf("len %d evictions %d, want 10 and 5", pt.len(), st.PeerEvictions.Load())
	}
	pt.sweep(now.Add(time.Hour))
	if pt.len() != 0 {
		t.Fatalf("sweep left %d", pt.len())
	}
}
