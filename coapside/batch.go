package coapside

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchSize is how many datagrams one recvmmsg/sendmmsg call moves.
const batchSize = 16

// slowHandler is the handler duration after which a reader flushes the
// replies it has batched, so one slow handler delays them at most once.
const slowHandler = 100 * time.Microsecond

// stealAfter is how long a handler may run before the datagrams read in the
// same batch and not yet processed are handed to goroutines of their own, so
// a slow handler does not hold up requests that arrived with it.
const stealAfter = time.Millisecond

// batchConn reads and writes several datagrams per system call
// (recvmmsg/sendmmsg on Linux). ipv4.Message and ipv6.Message are the same type.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func newBatchConn(c *net.UDPConn) batchConn {
	la, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil
	}
	if la.IP.To4() != nil {
		return ipv4.NewPacketConn(c)
	}
	return ipv6.NewPacketConn(c)
}

// datagramReader reads up to len(from) datagrams (at most as many as it
// has buffers) in one call into the buffers it was made with: entry i is
// lens[i] bytes from from[i], in the i-th buffer.
type datagramReader interface {
	read(lens []int, from []netip.AddrPort) (int, error)
}

// readerBatch holds a reader's batch buffers.
type readerBatch struct {
	e     *Endpoint
	rd    datagramReader
	bufs  [][]byte // the datagrams read, lens[i] bytes each
	lens  []int
	from  []netip.AddrPort
	now   int64 // unix ns, taken once per batch read
	wms   []ipv4.Message
	wbufs [][]byte
	nw    int

	mu    sync.Mutex // guards next and n against the steal timer
	next  int        // next unprocessed entry of rms
	n     int        // entries read
	steal timerItem  // armed while a handler runs with entries left
}

// newReaderBatch returns the batch buffers of a reader of conn, or nil
// when conn cannot be read in batches.
func newReaderBatch(e *Endpoint, conn *net.UDPConn, maxMsg int) *readerBatch {
	b := &readerBatch{
		e:     e,
		bufs:  make([][]byte, batchSize),
		lens:  make([]int, batchSize),
		from:  make([]netip.AddrPort, batchSize),
		wms:   make([]ipv4.Message, batchSize),
		wbufs: make([][]byte, batchSize),
	}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, maxMsg+1)
		b.wbufs[i] = make([]byte, 0, maxMsg)
		b.wms[i].Buffers = make([][]byte, 1)
	}
	if b.rd = newDatagramReader(conn, b.bufs); b.rd == nil {
		return nil
	}
	b.steal = timerItem{target: b, index: -1}
	return b
}

// maxSpareBatches bounds the batch buffers an endpoint keeps for readers
// to come (see Endpoint.spare).
const maxSpareBatches = 8

// takeBatch returns batch buffers for a new reader: a retired reader's,
// or new ones; nil when the socket cannot be read in batches.
func (e *Endpoint) takeBatch() *readerBatch {
	e.poolMu.Lock()
	if n := len(e.spare); n > 0 {
		b := e.spare[n-1]
		e.spare[n-1] = nil
		e.spare = e.spare[:n-1]
		e.poolMu.Unlock()
		return b
	}
	e.poolMu.Unlock()
	return newReaderBatch(e, e.udp, e.p.MaxMessageSize)
}

// putBatch keeps the batch buffers of a retiring reader for the next one.
// Every entry was served or stolen and every reply flushed: a steal timer
// still firing finds nothing left to take.
func (e *Endpoint) putBatch(b *readerBatch) {
	e.poolMu.Lock()
	if len(e.spare) < maxSpareBatches {
		e.spare = append(e.spare, b)
	}
	e.poolMu.Unlock()
}

// take returns the index of the next unprocessed entry, or -1.
func (b *readerBatch) take() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next >= b.n {
		return -1
	}
	b.next++
	return b.next - 1
}

// remaining reports whether unprocessed entries are left.
func (b *readerBatch) remaining() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.next < b.n
}

// stolenDatagram is a copy of a batch entry handed to its own goroutine.
type stolenDatagram struct {
	data []byte
	from netip.AddrPort
}

// fire runs on the scheduler when a handler has run for stealAfter: the
// entries left in the batch are copied and served by goroutines of their own.
func (b *readerBatch) fire(time.Time) {
	b.mu.Lock()
	var stolen []stolenDatagram
	for i := b.next; i < b.n; i++ {
		stolen = append(stolen, stolenDatagram{data: append([]byte(nil), b.bufs[i][:b.lens[i]]...), from: b.from[i]})
	}
	b.next = b.n
	b.mu.Unlock()
	e := b.e
	for _, d := range stolen {
		// Stolen datagrams are served by workers outside the reader pool:
		// they never read, so they take no part in its idle accounting
		// (counting them as idle readers let every real reader retire).
		e.poolMu.Lock()
		if e.closing.Load() {
			e.poolMu.Unlock()
			return
		}
		e.readers.Add(1)
		e.poolMu.Unlock()
		e.stats.StolenDatagrams.Add(1)
		go e.serveStolen(d)
	}
}

// serveStolen serves one datagram taken from a stalled batch.
func (e *Endpoint) serveStolen(d stolenDatagram) {
	defer e.readers.Done()
	r := &reader{scratch: make([]byte, 0, 256), out: make([]byte, 0, 256)}
	e.serveDatagram(r, d.data, udpPeer(d.from))
}

// writeR writes a reply produced on reader r: batched when r batches,
// immediately otherwise.
func (e *Endpoint) writeR(r *reader, data []byte, peer *peerAddr) {
	b := r.batch
	if b == nil {
		e.write(data, peer)
		return
	}
	i := b.nw
	b.wbufs[i] = append(b.wbufs[i][:0], data...)
	b.wms[i].Buffers[0] = b.wbufs[i]
	b.wms[i].Addr = peer.netAddr()
	b.nw++
	if b.nw == len(b.wms) {
		e.flush(r)
	}
}

// flush sends the replies batched on r.
func (e *Endpoint) flush(r *reader) {
	b := r.batch
	if b == nil || b.nw == 0 {
		return
	}
	pending := b.wms[:b.nw]
	retries := 0
	for len(pending) > 0 {
		n, err := e.bconn.WriteBatch(pending, 0)
		if err != nil && retries < writeRetries && e.queuedError(err) {
			// An ICMP error for an earlier datagram failed the call:
			// the batch is sent again from where it stopped.
			retries++
			if n > 0 && n <= len(pending) {
				e.stats.Sent.Add(uint64(n))
				pending = pending[n:]
			}
			continue
		}
		if err != nil {
			// Count the one that failed and carry on with the rest.
			e.stats.WriteErrors.Add(1)
			e.log.Debug("coap batch write failed", "err", err)
			n++
		} else {
			e.stats.Sent.Add(uint64(n))
		}
		if n <= 0 {
			n = 1
		}
		if n > len(pending) {
			n = len(pending)
		}
		pending = pending[n:]
	}
	for i := range b.nw {
		b.wms[i].Addr = nil
	}
	b.nw = 0
}

// serveBatch serves the n datagrams just read into r's batch.
func (e *Endpoint) serveBatch(r *reader, n int) {
	b := r.batch
	b.mu.Lock()
	b.next, b.n = 0, n
	b.mu.Unlock()
	// One clock reading for the batch: the datagrams arrived together,
	// and the rate limiter needs no finer time than that.
	b.now = time.Now().UnixNano()
	for {
		i := b.take()
		if i < 0 {
			break
		}
		e.serveDatagram(r, b.bufs[i][:b.lens[i]], udpPeer(b.from[i]))
	}
	b.now = 0
}

// readLoopBatch is readLoop for batching UDP sockets.
func (e *Endpoint) readLoopBatch(r *reader) {
	b := r.batch
	for {
		e.reading.Add(1)
		n, err := b.rd.read(b.lens, b.from)
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
		e.serveBatch(r, n)
		e.flush(r)
		if e.retireIfSurplus() {
			e.putBatch(b)
			return
		}
	}
}
