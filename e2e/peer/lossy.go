package peer

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Impairment is what a LossyProxy does to the datagrams going one way.
// Each rate is a probability in [0, 1], drawn per datagram.
type Impairment struct {
	Drop      float64 // the datagram is lost
	Duplicate float64 // a second copy is sent as well
	Reorder   float64 // the datagram is held back by ReorderBy, so later ones overtake it
	// Delay is added to every datagram; Jitter adds a random [0, Jitter) on top.
	Delay  time.Duration
	Jitter time.Duration
	// ReorderBy is how long a reordered datagram is held (default 5 ms).
	ReorderBy time.Duration
}

// LossyConfig configures a LossyProxy.
type LossyConfig struct {
	// Target is where datagrams from clients are forwarded.
	Target *net.UDPAddr
	// Listen is the proxy's address (default 127.0.0.1:0).
	Listen string
	// Seed fixes the random decisions: the n-th datagram going one way is
	// treated the same in every run with the same seed.
	Seed uint64
	// ToTarget impairs client -> target, FromTarget target -> client.
	ToTarget, FromTarget Impairment
}

// LossyCounts counts what a LossyProxy did to the datagrams going one way.
type LossyCounts struct {
	Received   uint64 // datagrams that arrived at the proxy
	Dropped    uint64 // of those, lost on purpose
	Duplicated uint64 // of those, sent twice
	Reordered  uint64 // of those, held back so later ones overtake them
	Sent       uint64 // datagrams written out, copies included
}

// LossyProxy is a UDP proxy for tests that loses, duplicates, delays and
// reorders datagrams between clients and one target. Each client address
// gets its own socket towards the target, so the target sees one peer per
// client and answers reach the client that asked.
type LossyProxy struct {
	conn   *net.UDPConn
	target *net.UDPAddr
	to     *line
	from   *line

	mu       sync.Mutex
	sessions map[string]*net.UDPConn // client address -> socket towards target
	closed   bool

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// StartLossyProxy starts a proxy to cfg.Target; it stops when the test ends.
func StartLossyProxy(tb testing.TB, cfg LossyConfig) *LossyProxy {
	tb.Helper()
	p, err := NewLossyProxy(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// NewLossyProxy starts a proxy to cfg.Target. Close stops it.
func NewLossyProxy(cfg LossyConfig) (*LossyProxy, error) {
	if cfg.Target == nil {
		return nil, errors.New("lossy proxy: no target")
	}
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("lossy proxy: %w", err)
	}
	conn, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, fmt.Errorf("lossy proxy: %w", err)
	}
	p := &LossyProxy{
		conn:     conn,
		target:   cfg.Target,
		to:       newLine(cfg.ToTarget, cfg.Seed, 1),
		from:     newLine(cfg.FromTarget, cfg.Seed, 2),
		sessions: map[string]*net.UDPConn{},
	}
	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.to.run() }()
	go func() { defer p.wg.Done(); p.from.run() }()
	go func() { defer p.wg.Done(); p.readClients() }()
	return p, nil
}

// Addr is the address clients send to.
func (p *LossyProxy) Addr() *net.UDPAddr { return p.conn.LocalAddr().(*net.UDPAddr) }

// Counts returns what the proxy did so far, each way.
func (p *LossyProxy) Counts() (toTarget, fromTarget LossyCounts) {
	return p.to.counts(), p.from.counts()
}

// Close stops the proxy and waits for its goroutines. Datagrams still
// held back are dropped.
func (p *LossyProxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		for _, s := range p.sessions {
			s.Close()
		}
		p.mu.Unlock()
		p.conn.Close()
		p.to.stop()
		p.from.stop()
		p.wg.Wait()
	})
	return nil
}

// readClients forwards what clients send, opening a session per client.
func (p *LossyProxy) readClients() {
	buf := make([]byte, 65536)
	for {
		n, from, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		up, err := p.session(from)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // no socket for this client: as good as lost
		}
		p.to.submit(buf[:n], func(b []byte) { _, _ = up.Write(b) })
	}
}

// session returns the socket towards the target for client, opening it and
// its reader on first use; net.ErrClosed once the proxy is closing.
func (p *LossyProxy) session(client *net.UDPAddr) (*net.UDPConn, error) {
	key := client.String()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if up := p.sessions[key]; up != nil {
		return up, nil
	}
	up, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil, fmt.Errorf("lossy proxy: %w", err)
	}
	p.sessions[key] = up
	back := *client
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // ICMP port unreachable from a target not yet up
			}
			p.from.submit(buf[:n], func(b []byte) { _, _ = p.conn.WriteToUDP(b, &back) })
		}
	}()
	return up, nil
}

// line impairs the datagrams going one way and sends them when due.
type line struct {
	imp Impairment

	mu   sync.Mutex
	rnd  *rand.Rand
	due  dueHeap
	seq  uint64
	wake chan struct{}
	done chan struct{}

	received, dropped, duplicated, reordered, sent atomic.Uint64
}

func newLine(imp Impairment, seed, stream uint64) *line {
	if imp.ReorderBy <= 0 {
		imp.ReorderBy = 5 * time.Millisecond
	}
	return &line{
		imp:  imp,
		rnd:  rand.New(rand.NewPCG(seed, stream)),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
}

func (l *line) counts() LossyCounts {
	return LossyCounts{
		Received: l.received.Load(), Dropped: l.dropped.Load(), Duplicated: l.duplicated.Load(),
		Reordered: l.reordered.Load(), Sent: l.sent.Load(),
	}
}

// submit decides the fate of one datagram and queues its copies.
func (l *line) submit(data []byte, send func([]byte)) {
	l.received.Add(1)
	now := time.Now()
	l.mu.Lock()
	// Every datagram draws the same numbers in the same order, so the
	// decisions for the n-th datagram depend on the seed alone.
	drop := l.rnd.Float64() < l.imp.Drop
	dup := l.rnd.Float64() < l.imp.Duplicate
	reorder := l.rnd.Float64() < l.imp.Reorder
	j1, j2 := l.rnd.Float64(), l.rnd.Float64()
	if drop {
		l.mu.Unlock()
		l.dropped.Add(1)
		return
	}
	b := append([]byte(nil), data...)
	at := now.Add(l.imp.Delay + time.Duration(j1*float64(l.imp.Jitter)))
	if reorder {
		at = at.Add(l.imp.ReorderBy)
		l.reordered.Add(1)
	}
	l.pushLocked(at, b, send)
	if dup {
		l.duplicated.Add(1)
		l.pushLocked(now.Add(l.imp.Delay+time.Duration(j2*float64(l.imp.Jitter))), b, send)
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *line) pushLocked(at time.Time, b []byte, send func([]byte)) {
	l.seq++
	heap.Push(&l.due, dueItem{at: at, seq: l.seq, data: b, send: send})
}

// run sends queued datagrams when they are due, until stop.
func (l *line) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		l.mu.Lock()
		now := time.Now()
		var ready []dueItem
		for len(l.due) > 0 && !l.due[0].at.After(now) {
			ready = append(ready, heap.Pop(&l.due).(dueItem))
		}
		wait := time.Hour
		if len(l.due) > 0 {
			wait = l.due[0].at.Sub(now)
		}
		l.mu.Unlock()
		for _, it := range ready {
			it.send(it.data)
			l.sent.Add(1)
		}
		if len(ready) > 0 {
			continue // sending took time: look again before sleeping
		}
		timer.Reset(wait) // no stale tick survives Reset (Go 1.23 timers)
		select {
		case <-l.done:
			return
		case <-l.wake:
		case <-timer.C:
		}
	}
}

func (l *line) stop() { close(l.done) }

// dueItem is a datagram waiting to be sent.
type dueItem struct {
	at   time.Time
	seq  uint64 // keeps datagrams due at the same time in arrival order
	data []byte
	send func([]byte)
}

type dueHeap []dueItem

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(dueItem)) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = dueItem{}
	*h = old[:len(old)-1]
	return it
}
