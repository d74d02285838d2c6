package coapside

import (
	"net"
	"sync"
	"testing"
	"time"
)

// TestObserveDeadObserversBeyondPeerTableAreRemoved: eight times more
// observers than the peer table holds go silent without a word (their
// sockets stay open and never answer, as a host that is down behind a
// firewall: no RST, no ICMP). The checks must remove them all well before
// one MAX_TRANSMIT_WAIT per table's worth, which is what admitting a new
// peer only when an unacknowledged check has run its course costs, and a
// notification that finds the table full must be deferred to the next
// tick, not failed at every change of the resource.
func TestObserveDeadObserversBeyondPeerTableAreRemoved(t *testing.T) {
	const (
		tableSize = 4
		observers = 8 * tableSize
	)
	eo := EndpointOptions{
		AckTimeout:      50 * time.Millisecond,
		AckRandomFactor: 1.0,
		MaxRetransmit:   5, // MAX_TRANSMIT_WAIT 50 ms × 63 = 3.15 s
		SeparateAfter:   time.Second,
		MaxPeers:        tableSize,
	}
	const maxTransmitWait = 63 * 50 * time.Millisecond
	const check = 400 * time.Millisecond
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	res := &counterResource{value: []byte("v")}
	obs, addr := startObserveServerWith(t, conn, ObserveOptions{CheckInterval: check}, eo, res)
	var socks []*net.UDPConn
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	for i := range observers {
		c, err := registerSocket("127.0.0.1", addr, uint16(i))
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, c) // open and silent from now on
	}
	if got := obs.Observers("/obs"); got != observers {
		t.Fatalf("observers %d, want %d", got, observers)
	}
	ep := endpointOf(t, obs, addr)
	began := time.Now()
	// The resource changes every 10 ms meanwhile: each change finding
	// the table full must not be another failed attempt.
	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				obs.Notify("/obs")
			}
		}
	})
	// Without giving up, the last table's worth starts its check only
	// after seven others ran for MAX_TRANSMIT_WAIT each (22 s).
	bound := check + 4*maxTransmitWait
	deadline := began.Add(bound)
	for obs.Observers("/obs") > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(began)
	close(stop)
	pub.Wait()
	s, st := obs.Stats(), ep.Stats().Snapshot()
	t.Logf("%d observers, peer table %d: all removed after %v; timed out %d, checks %d, deferred %d, send errors %d; peers given up %d",
		observers, tableSize, took, s.Timeouts, s.Checks, s.Deferred, s.SendErrors, st.PeerYields)
	if left := obs.Observers("/obs"); left > 0 {
		t.Fatalf("%d of %d observers left after %v (bound %v)", left, observers, took, bound)
	}
	if s.SendErrors != 0 {
		t.Errorf("%d send errors: a full peer table must defer, not fail", s.SendErrors)
	}
	// One attempt per observer per retry tick (a quarter of the check
	// interval), however often the resource changed.
	ticks := uint64(took/(check/4)) + 2
	if s.Deferred > observers*ticks {
		t.Errorf("%d deferrals in %d ticks for %d observers: more than one per observer per tick", s.Deferred, ticks, observers)
	}
	if st.PeerYields == 0 {
		t.Error("no peer gave up its entry")
	}
}
