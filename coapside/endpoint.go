package coapside

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside/internal/loggate"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// Endpoint is the CoAP message layer over one net.PacketConn (RFC 7252 §4):
// it assigns message IDs per peer, retransmits confirmable messages,
// deduplicates received messages, matches ACK/RST to what it sent, routes
// responses by token and dispatches requests to a Handler. Client and Server
// are built on it; Observe and block-wise code use its Send, SendAsync,
// Exchange and RegisterToken methods.
//
// The Endpoint owns the conn: Close closes it.
type Endpoint struct {
	conn  net.PacketConn
	udp   *net.UDPConn // fast path when conn is a UDP socket
	bconn batchConn    // recvmmsg/sendmmsg on udp, nil when disabled
	p     params
	log   *slog.Logger

	stats Stats
	peers *peerTable
	dedup *dedupTable
	sched *scheduler

	// limits counts and logs what a resource limit of the endpoint
	// refused (pending_per_peer, handlers_per_source).
	limits limitCounter

	mu      sync.Mutex
	pending map[dedupKey]*outgoing // our CON/NON awaiting ACK/RST, by (peer, MID)
	tokens  map[tokenKey]*tokenReg // response routing by (peer, token)

	srv     *serverConfig // nil for a client-only endpoint
	baseCtx context.Context
	cancel  context.CancelFunc

	// Reader pool: readers run handlers inline; a new reader is started when
	// the last idle one becomes busy, surplus idle readers retire. idle
	// counts pool readers not running a handler and never drops below one
	// while the endpoint is open: a reader retires only while another idle
	// reader remains. Workers serving stolen datagrams are not pool readers.
	poolMu sync.Mutex
	idle   int
	total  int
	busy   atomic.Int32
	// spare holds the batch buffers of retired readers (at most
	// maxSpareBatches) for the next reader: under load readers start and
	// retire hundreds of times a second, and each batch is some 40 KB.
	spare   []*readerBatch
	readers sync.WaitGroup // pool readers and stolen-datagram workers

	// Liveness, measured apart from the pool accounting: how many
	// goroutines are inside a read call now, and when a read last returned.
	reading  atomic.Int32
	lastRead atomic.Int64 // unix nanoseconds

	resetHook   atomic.Pointer[func(peer net.Addr, mid uint16)] // RSTs matching nothing tracked
	unreachHook atomic.Pointer[func(peer net.Addr)]             // destinations reported port unreachable

	// recverr: ICMP errors for what the UDP socket sends are queued on
	// it (Linux) and read by drainErrors.
	recverr bool
	unreach unreachQueue

	blockGate loggate.Gate // "source blocked" lines

	closing   atomic.Bool
	draining  atomic.Bool
	closeOnce sync.Once
	done      chan struct{}
	errMu     sync.Mutex
	err       error
}

// serverConfig is the request-dispatch part of an endpoint.
type serverConfig struct {
	handler        Handler
	maxConcurrent  int
	handlers       *sourceQuota // running handlers per source, within maxConcurrent
	overloadMaxAge uint32
	idleReaders    int
	limiter        *rateLimiter // nil: no per-source rate limit
	rateLogged     atomic.Int64 // unix ns of the last rate-limit log line
	rateBlock      time.Duration
	block          *sourceBlock // nil: sources over their limit are never blocked
	ampOpts        AmplificationOptions
	amp            *amplifier // nil: responses are not bounded on this conn
	proxy          bool       // forward-proxy requests reach the handler
}

// NewEndpoint starts a message layer on conn. Requests that arrive are
// answered 4.04 Not Found; use Server to serve them. Call Close to stop it.
func NewEndpoint(conn net.PacketConn, opts EndpointOptions) *Endpoint {
	return newEndpoint(conn, opts, nil)
}

func newEndpoint(conn net.PacketConn, opts EndpointOptions, srv *serverConfig) *Endpoint {
	p := opts.normalize()
	ctx, cancel := context.WithCancel(context.Background())
	e := &Endpoint{
		conn:    conn,
		p:       p,
		log:     p.Logger,
		pending: make(map[dedupKey]*outgoing),
		tokens:  make(map[tokenKey]*tokenReg),
		srv:     srv,
		baseCtx: ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	e.udp, _ = conn.(*net.UDPConn)
	if e.udp != nil && !p.DisableBatching {
		e.bconn = newBatchConn(e.udp)
	}
	if e.udp != nil {
		e.recverr = enableRecvErr(e.udp)
	}
	if srv != nil {
		srv.amp = newAmplifier(srv.ampOpts, conn, &e.stats)
	}
	e.peers = newPeerTable(p.MaxPeers, p.ExchangeLifetime, notifyYieldAfter(p), &e.stats)
	// Without a server every entry is made by the endpoint's own
	// requests: a client observing more devices than MaxPeers, all with a
	// registration in flight at once, must not have any refused.
	e.peers.grow = srv == nil
	e.dedup = newDedupTable(p.DedupCapacity, &e.stats)
	e.sched = newScheduler()
	if srv != nil && srv.limiter != nil {
		if srv.block = newSourceBlock(e.udp, e.sched, srv.rateBlock); srv.block != nil {
			srv.limiter.blockFloods()
		}
	}
	e.scheduleSweep()
	e.lastRead.Store(time.Now().UnixNano())
	e.poolMu.Lock()
	e.spawnReaderLocked()
	e.poolMu.Unlock()
	return e
}

// Stats returns the endpoint's counters.
func (e *Endpoint) Stats() *Stats { return &e.stats }

// LimitHits returns how often each resource limit of the endpoint refused
// something (LimitPendingPerPeer and LimitHandlersPerSource are the
// endpoint's).
func (e *Endpoint) LimitHits() LimitHits { return e.limits.snapshot() }

// Conn returns the underlying PacketConn (for example to query a DTLS peer identity).
func (e *Endpoint) Conn() net.PacketConn { return e.conn }

// LocalAddr returns the local address of the conn.
func (e *Endpoint) LocalAddr() net.Addr { return e.conn.LocalAddr() }

// Done is closed when the endpoint has stopped.
func (e *Endpoint) Done() <-chan struct{} { return e.done }

// Err returns the error that stopped the endpoint (nil after Close).
func (e *Endpoint) Err() error {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	return e.err
}

// Close stops the endpoint: it closes the conn, waits for the readers and
// the scheduler, and ends every pending transmission and token with Closed.
// It is idempotent. It cancels the context of running requests and waits for
// their handlers to return; Server.Shutdown drains them gracefully first.
func (e *Endpoint) Close() error {
	return e.closeWith(nil)
}

func (e *Endpoint) closeWith(cause error) error {
	var err error
	e.closeOnce.Do(func() {
		e.closing.Store(true)
		e.cancel()
		if cause != nil {
			e.errMu.Lock()
			e.err = cause
			e.errMu.Unlock()
		}
		err = e.conn.Close()
		e.readers.Wait()
		e.sched.stop()
		e.mu.Lock()
		pend := e.pending
		toks := e.tokens
		e.pending, e.tokens = nil, nil
		e.mu.Unlock()
		for _, og := range pend {
			og.finish(Closed, nil)
		}
		for _, reg := range toks {
			reg.fn(nil, nil, ErrClosed)
		}
		close(e.done)
	})
	return err
}

// scheduleSweep expires idle peer state periodically and arms the reader
// watchdog.
func (e *Endpoint) scheduleSweep() {
	every := e.p.ExchangeLifetime / 4
	if every < time.Second {
		every = time.Second
	}
	var it *timerItem
	it = e.sched.schedule(time.Now().Add(every), func(now time.Time) {
		e.peers.sweep(now)
		if a := e.amp(); a != nil {
			a.verified.sweep(now)
		}
		e.sched.reschedule(it, now.Add(every))
	})
	var watch *timerItem
	watch = e.sched.schedule(time.Now().Add(watchEvery), func(now time.Time) {
		e.watchReaders(now)
		e.sched.reschedule(watch, now.Add(watchEvery))
	})
}

// watchEvery is how often the reader watchdog looks.
const watchEvery = time.Second

// reader holds per-goroutine buffers and the decoded message.
type reader struct {
	buf     []byte
	scratch []byte
	out     []byte
	msg     message.Message
	batch   *readerBatch // non-nil when the socket batches system calls
	pooled  bool         // a pool reader (not a stolen-datagram worker)
}

func (e *Endpoint) spawnReaderLocked() {
	e.idle++
	e.total++
	e.readers.Add(1)
	go e.readLoop()
}

func (e *Endpoint) readLoop() {
	defer e.readers.Done()
	r := &reader{
		scratch: make([]byte, 0, 256),
		out:     make([]byte, 0, 256),
		pooled:  true,
	}
	if e.bconn != nil {
		if r.batch = e.takeBatch(); r.batch != nil {
			e.readLoopBatch(r)
			return
		}
	}
	r.buf = make([]byte, e.p.MaxMessageSize+1)
	for {
		e.reading.Add(1)
		n, from, err := e.read(r.buf)
		e.readReturned()
		if err != nil {
			if e.queuedError(err) {
				continue // an ICMP error for something sent: not the reader's
			}
			if e.readFailed(err) {
				return
			}
			continue
		}
		e.serveDatagram(r, r.buf[:n], from)
		if e.retireIfSurplus() {
			return
		}
	}
}

// readFailed handles a read error and reports whether the reader must stop.
func (e *Endpoint) readFailed(err error) bool {
	if e.closing.Load() || errors.Is(err, net.ErrClosed) {
		e.retire()
		if !e.closing.Load() {
			go e.closeWith(err) //nolint:errcheck // reported via Err
		}
		return true
	}
	e.stats.ReadErrors.Add(1)
	e.log.Debug("coap read failed", "err", err)
	time.Sleep(time.Millisecond)
	return false
}

func (e *Endpoint) read(buf []byte) (int, peerAddr, error) {
	if e.udp != nil {
		n, ap, err := e.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return 0, peerAddr{}, err
		}
		return n, udpPeer(ap), nil
	}
	n, a, err := e.conn.ReadFrom(buf)
	if err != nil {
		return 0, peerAddr{}, err
	}
	return n, addrPeer(a), nil
}

func (e *Endpoint) retire() {
	e.poolMu.Lock()
	e.idle--
	e.total--
	e.poolMu.Unlock()
}

func (e *Endpoint) retireIfSurplus() bool {
	limit := DefaultIdleReaders
	if e.srv != nil {
		limit = e.srv.idleReaders
	}
	e.poolMu.Lock()
	defer e.poolMu.Unlock()
	if e.idle > limit {
		e.idle--
		e.total--
		return true
	}
	return false
}

// enterBusy marks the calling pool reader busy, starting another reader if
// none is idle. Workers outside the pool do not count.
func (e *Endpoint) enterBusy(r *reader) {
	if !r.pooled {
		return
	}
	e.poolMu.Lock()
	e.idle--
	if e.idle <= 0 && !e.closing.Load() {
		e.spawnReaderLocked()
	}
	e.poolMu.Unlock()
}

func (e *Endpoint) leaveBusy(r *reader) {
	if !r.pooled {
		return
	}
	e.poolMu.Lock()
	e.idle++
	e.poolMu.Unlock()
}

// readReturned records that a read call returned.
func (e *Endpoint) readReturned() {
	e.reading.Add(-1)
	e.lastRead.Store(time.Now().UnixNano())
}

// stallAfter is how long an open endpoint may have no goroutine inside a
// read call, and no read returning, before it counts as stalled although it
// still has readers (they are stuck, or starved of CPU that long).
const stallAfter = 10 * time.Second

// Stalled reports whether the endpoint has stopped reading its conn: it is
// open, no goroutine is inside a read call, and either no reader is left at
// all or none has returned from a read for stallAfter. A healthy endpoint
// always keeps one reader parked in read or busy serving what it just read.
func (e *Endpoint) Stalled() bool {
	return e.stalledAt(time.Now())
}

func (e *Endpoint) stalledAt(now time.Time) bool {
	if e.closing.Load() || e.reading.Load() > 0 {
		return false
	}
	e.poolMu.Lock()
	readers := e.total
	e.poolMu.Unlock()
	return readers == 0 || now.Sub(time.Unix(0, e.lastRead.Load())) > stallAfter
}

// watchReaders is the endpoint's own watchdog, run by the sweep: a stalled
// endpoint gets a new reader, logged at error level and counted, so one
// fault in the pool cannot silence the socket for good.
func (e *Endpoint) watchReaders(now time.Time) {
	if !e.stalledAt(now) {
		return
	}
	e.poolMu.Lock()
	defer e.poolMu.Unlock()
	if e.closing.Load() {
		return
	}
	e.stats.ReaderRestarts.Add(1)
	e.log.Error("coap listener stopped reading; starting a reader", "addr", e.conn.LocalAddr().String(), "readers", e.total, "idle", e.idle)
	e.spawnReaderLocked()
}

// serveDatagram processes one received datagram (RFC 7252 §4).
func (e *Endpoint) serveDatagram(r *reader, data []byte, from peerAddr) {
	e.stats.Received.Add(1)
	if e.srv != nil && e.srv.limiter != nil && e.rateLimited(r, data, &from) {
		return // shed before any decoding
	}
	if len(data) > e.p.MaxMessageSize {
		e.rejectOversize(r, data, from)
		return
	}
	m := &r.msg
	if err := m.Unmarshal(data); err != nil {
		e.rejectMalformed(r, m, data, from, err)
		return
	}
	switch m.Type {
	case message.Acknowledgement, message.Reset:
		e.handleAckReset(m, data, from)
		return
	}
	switch {
	case m.Code == message.Empty:
		if m.Type == message.Confirmable {
			// RFC 7252 §4.3: an empty CON ("ping") is answered with RST.
			e.stats.Pings.Add(1)
			e.sendReset(r, from, m.MessageID)
		}
	case m.Code.IsRequest():
		e.handleRequest(r, m, data, from)
	case m.Code.IsResponse():
		e.handleResponse(r, m, data, from)
	default:
		// Reserved code classes 1, 6, 7 (RFC 7252 §12.1): reject a CON, drop a NON.
		if m.Type == message.Confirmable {
			e.stats.MalformedRejected.Add(1)
			e.sendReset(r, from, m.MessageID)
		} else {
			e.stats.MalformedDropped.Add(1)
		}
	}
}

// rejectMalformed answers a malformed CON with RST and drops anything else
// (RFC 7252 §4.2, §4.3). Messages with another version are silently ignored (§3).
func (e *Endpoint) rejectMalformed(r *reader, m *message.Message, data []byte, from peerAddr, err error) {
	if len(data) >= 4 && !errors.Is(err, message.ErrVersion) && m.Type == message.Confirmable {
		e.stats.MalformedRejected.Add(1)
		e.sendReset(r, from, m.MessageID)
		return
	}
	e.stats.MalformedDropped.Add(1)
	e.log.Debug("coap malformed message dropped", "peer", from.netAddr().String(), "err", err)
}

// sendReset writes an RST for mid.
func (e *Endpoint) sendReset(r *reader, to peerAddr, mid uint16) {
	r.out = appendEmpty(r.out[:0], message.Reset, mid)
	e.stats.ResetsSent.Add(1)
	e.writeR(r, r.out, &to)
}

func appendEmpty(dst []byte, t message.Type, mid uint16) []byte {
	return append(dst, 0x40|byte(t)<<4, 0, byte(mid>>8), byte(mid))
}

// handleAckReset matches an ACK or RST to the message we sent (RFC 7252 §4.2).
// A piggybacked response in an ACK is routed by token.
func (e *Endpoint) handleAckReset(m *message.Message, data []byte, from peerAddr) {
	key := dedupKey{peer: from.key, mid: m.MessageID}
	e.mu.Lock()
	og := e.pending[key]
	if og != nil {
		delete(e.pending, key)
	}
	e.mu.Unlock()
	if m.Type == message.Reset {
		e.stats.ResetsReceived.Add(1)
		if og == nil {
			e.stats.UnmatchedAcks.Add(1)
			if h := e.resetHook.Load(); h != nil {
				(*h)(from.netAddr(), m.MessageID)
			}
			return
		}
		og.finish(ResetByPeer, nil)
		return
	}
	if og == nil || !og.con {
		e.stats.UnmatchedAcks.Add(1)
		if og != nil { // an ACK for a NON is nonsense; keep waiting
			e.mu.Lock()
			if e.pending != nil {
				e.pending[key] = og
			}
			e.mu.Unlock()
		}
		return
	}
	ack := cloneMessage(data)
	og.finish(Acknowledged, ack)
	if ack.Code.IsResponse() {
		e.deliver(ack, from)
	}
}

// cloneMessage decodes a private copy of data, so the result may be retained.
func cloneMessage(data []byte) *message.Message {
	m := new(message.Message)
	if err := m.Unmarshal(bytes.Clone(data)); err != nil {
		return nil
	}
	return m
}
