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
	// IdleTimeout, when set, makes the proxy behave like a NAT's UDP
	// bindings: a client's socket towards the target (its binding) is
	// closed once the client has sent nothing for this long, so the
	// target cannot reach the client until it sends again, from a new
	// port. Only client -> target traffic keeps a binding, as with
	// carrier NAT.
	IdleTimeout time.Duration
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
// client and answers reach the client that asked. That makes it a NAT as
// well (see StartNAT): each client's source port is rewritten, only the
// target can answer through a binding, bindings expire when idle
// (IdleTimeout) and Rebind moves a client to a new port. Loopback only.
type LossyProxy struct {
	conn   *net.UDPConn
	target *net.UDPAddr
	to     *line
	from   *line
	idle   time.Duration

	mu       sync.Mutex
	sessions map[string]*session // client address -> its binding
	closed   bool
	expired  atomic.Uint64
	stopIdle chan struct{}

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
	if !cfg.Target.IP.IsLoopback() {
		return nil, fmt.Errorf("lossy proxy: target %v is not a loopback address", cfg.Target)
	}
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("lossy proxy: %w", err)
	}
	if !la.IP.IsLoopback() {
		return nil, fmt.Errorf("lossy proxy: listen address %q is not a loopback address", listen)
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
		idle:     cfg.IdleTimeout,
		sessions: map[string]*session{},
		stopIdle: make(chan struct{}),
	}
	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.to.run() }()
	go func() { defer p.wg.Done(); p.from.run() }()
	go func() { defer p.wg.Done(); p.readClients() }()
	if p.idle > 0 {
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.expireIdle() }()
	}
	return p, nil
}

// session is one client's binding: its socket towards the target.
type session struct {
	up      *net.UDPConn
	lastOut atomic.Int64 // unix ns of the client's latest datagram
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
			s.up.Close()
		}
		p.mu.Unlock()
		close(p.stopIdle)
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
// its reader on first use; net.ErrClosed once the proxy is closing. Each
// call counts as the client sending (it keeps the binding).
func (p *LossyProxy) session(client *net.UDPAddr) (*net.UDPConn, error) {
	key := client.String()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	s := p.sessions[key]
	if s == nil {
		var err error
		if s, err = p.openLocked(client); err != nil {
			return nil, err
		}
		p.sessions[key] = s
	}
	s.lastOut.Store(time.Now().UnixNano())
	return s.up, nil
}

// openLocked opens a binding for client: a socket towards the target and
// its reader, which hands what the target sends to the client.
func (p *LossyProxy) openLocked(client *net.UDPAddr) (*session, error) {
	up, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil, fmt.Errorf("lossy proxy: %w", err)
	}
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
	return &session{up: up}, nil
}

// External returns the address the target sees client at (its binding),
// or nil when the client has none (never sent, or expired).
func (p *LossyProxy) External(client *net.UDPAddr) *net.UDPAddr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.sessions[client.String()]; s != nil {
		return s.up.LocalAddr().(*net.UDPAddr)
	}
	return nil
}

// Rebind gives client a new binding at once, as a NAT that reassigns a
// port: the old port closes (what the target sends there is lost) and the
// client's next datagram reaches the target from the new one, which it
// returns. The new port is opened before the old one closes, so they
// differ.
func (p *LossyProxy) Rebind(client *net.UDPAddr) (*net.UDPAddr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	s, err := p.openLocked(client)
	if err != nil {
		return nil, err
	}
	s.lastOut.Store(time.Now().UnixNano())
	key := client.String()
	if old := p.sessions[key]; old != nil {
		old.up.Close()
	}
	p.sessions[key] = s
	return s.up.LocalAddr().(*net.UDPAddr), nil
}

// Expired counts the bindings closed by IdleTimeout.
func (p *LossyProxy) Expired() uint64 { return p.expired.Load() }

// expireIdle closes the bindings whose client has been silent for
// IdleTimeout, checking a few times per IdleTimeout.
func (p *LossyProxy) expireIdle() {
	t := time.NewTicker(max(p.idle/8, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.stopIdle:
			return
		case now := <-t.C:
			p.mu.Lock()
			for key, s := range p.sessions {
				if now.UnixNano()-s.lastOut.Load() >= int64(p.idle) {
					s.up.Close()
					delete(p.sessions, key)
					p.expired.Add(1)
				}
			}
			p.mu.Unlock()
		}
	}
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
