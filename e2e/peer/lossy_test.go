package peer

import (
	"encoding/binary"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// sink is a UDP target recording the sequence numbers it receives and
// echoing every datagram back to its sender.
type sink struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []uint32
}

func startSink(t *testing.T) *sink {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{conn: c}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got = append(s.got, binary.BigEndian.Uint32(buf[:n]))
			s.mu.Unlock()
			_, _ = c.WriteToUDP(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return s
}

func (s *sink) received() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// sendSeq sends n numbered datagrams through p from one client socket, each
// once the proxy has taken the one before (so the proxy sees them in
// order), and returns the client socket.
func sendSeq(t *testing.T, p *LossyProxy, n int) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for i := range n {
		if _, err := c.Write(binary.BigEndian.AppendUint32(nil, uint32(i))); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 5*time.Second, "proxy took the datagram", func() bool {
			to, _ := p.Counts()
			return to.Received == uint64(i+1)
		})
	}
	return c
}

// runSeq passes n datagrams through a proxy with imp on the way to the
// target and returns what the target received once the proxy sent
// everything, with the proxy's counts.
func runSeq(t *testing.T, seed uint64, imp Impairment, n int) ([]uint32, LossyCounts) {
	t.Helper()
	s := startSink(t)
	p := StartLossyProxy(t, LossyConfig{Target: s.conn.LocalAddr().(*net.UDPAddr), Seed: seed, ToTarget: imp})
	sendSeq(t, p, n)
	testkit.Eventually(t, 5*time.Second, "held datagrams sent", func() bool {
		to, _ := p.Counts()
		return to.Sent == to.Received-to.Dropped+to.Duplicated && len(s.received()) == int(to.Sent)
	})
	to, _ := p.Counts()
	return s.received(), to
}

// TestLossyProxyPassesEverythingWhenClean: without impairments every
// datagram reaches the target and its echo returns to the client.
func TestLossyProxyPassesEverythingWhenClean(t *testing.T) {
	s := startSink(t)
	p := StartLossyProxy(t, LossyConfig{Target: s.conn.LocalAddr().(*net.UDPAddr)})
	c := sendSeq(t, p, 50)
	buf := make([]byte, 64)
	for i := range 50 {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint32(buf[:n]); got != uint32(i) {
			t.Fatalf("echo %d carries %d", i, got)
		}
	}
	to, from := p.Counts()
	want := LossyCounts{Received: 50, Sent: 50}
	if to != want || from != want {
		t.Fatalf("counts to target %+v, from target %+v; want %+v each way", to, from, want)
	}
}

// TestLossyProxySeedFixesDecisions: the same seed drops and duplicates the
// same datagrams; another seed does not; the counts add up.
func TestLossyProxySeedFixesDecisions(t *testing.T) {
	imp := Impairment{Drop: 0.3, Duplicate: 0.3}
	const n = 60
	a, ca := runSeq(t, 7, imp, n)
	b, cb := runSeq(t, 7, imp, n)
	c, _ := runSeq(t, 8, imp, n)
	slices.Sort(a)
	slices.Sort(b)
	slices.Sort(c)
	if !slices.Equal(a, b) || ca != cb {
		t.Fatalf("seed 7 twice: %v %+v and %v %+v", a, ca, b, cb)
	}
	if slices.Equal(a, c) {
		t.Fatalf("seeds 7 and 8 treated %d datagrams alike", n)
	}
	if ca.Dropped == 0 || ca.Duplicated == 0 {
		t.Fatalf("30%% rates over %d datagrams did nothing: %+v", n, ca)
	}
	if len(a) != n-int(ca.Dropped)+int(ca.Duplicated) {
		t.Fatalf("target got %d datagrams; counts %+v", len(a), ca)
	}
}

// TestLossyProxyReorders: held-back datagrams arrive after later ones, and
// none is lost.
func TestLossyProxyReorders(t *testing.T) {
	got, counts := runSeq(t, 1, Impairment{Reorder: 0.3, ReorderBy: 50 * time.Millisecond}, 40)
	if counts.Reordered == 0 {
		t.Fatalf("nothing reordered: %+v", counts)
	}
	if slices.IsSorted(got) {
		t.Fatalf("target got the datagrams in order: %v", got)
	}
	slices.Sort(got)
	for i, v := range got {
		if v != uint32(i) {
			t.Fatalf("datagram %d missing or doubled: %v", i, got)
		}
	}
}
