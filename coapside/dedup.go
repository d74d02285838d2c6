package coapside

import (
	"sync"
	"time"
)

// dedupKey identifies a received message for duplicate detection (RFC 7252 §4.5).
type dedupKey struct {
	peer peerKey
	mid  uint16
}

const (
	dedupFree uint8 = iota
	dedupInProgress
	dedupDone
)

type dedupEntry struct {
	key     dedupKey
	expires int64 // unix nanoseconds
	gen     uint32
	state   uint8
	resp    []byte // cached reply to replay for a duplicate CON
}

// dedupRef points at a dedup slot; gen guards against slot reuse.
type dedupRef struct {
	idx int32
	gen uint32
}

// dedupTable is a fixed-capacity FIFO ring of recently received message IDs
// keyed by (peer, MID). Entries expire after their lifetime; when the ring is
// full the oldest live entry is evicted and counted. Response buffers are
// reused between slots, so steady-state operation does not allocate.
type dedupTable struct {
	mu    sync.Mutex
	index map[dedupKey]int32
	ring  []dedupEntry
	head  int
	n     int
	stats *Stats
}

func newDedupTable(capacity int, stats *Stats) *dedupTable {
	return &dedupTable{
		index: make(map[dedupKey]int32, capacity),
		ring:  make([]dedupEntry, capacity),
		stats: stats,
	}
}

// dedupResult is what begin found.
type dedupResult uint8

const (
	dedupNew       dedupResult = iota // first copy: process it
	dedupDupBusy                      // duplicate, still being processed: ignore
	dedupDupReplay                    // duplicate with a cached reply: re-send it
)

// begin records a received message. For a duplicate with a cached reply, the
// reply is appended to scratch and returned.
func (d *dedupTable) begin(key dedupKey, now time.Time, lifetime time.Duration, scratch []byte) (dedupRef, dedupResult, []byte) {
	nowNs := now.UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	if idx, ok := d.index[key]; ok {
		e := &d.ring[idx]
		if e.expires > nowNs {
			if e.state == dedupDone && len(e.resp) > 0 {
				return dedupRef{}, dedupDupReplay, append(scratch[:0], e.resp...)
			}
			return dedupRef{}, dedupDupBusy, nil
		}
		delete(d.index, key)
		e.state = dedupFree
	}
	// Expire from the head; bounded work per call.
	for i := 0; i < 8 && d.n > 0; i++ {
		h := &d.ring[d.head]
		if h.state != dedupFree && h.expires > nowNs {
			break
		}
		d.popHeadLocked()
	}
	if d.n == len(d.ring) {
		d.stats.DedupEvictions.Add(1)
		d.popHeadLocked()
	}
	idx := (d.head + d.n) % len(d.ring)
	d.n++
	e := &d.ring[idx]
	e.key = key
	e.expires = nowNs + int64(lifetime)
	e.gen++
	e.state = dedupInProgress
	e.resp = e.resp[:0]
	d.index[key] = int32(idx)
	return dedupRef{idx: int32(idx), gen: e.gen}, dedupNew, nil
}

func (d *dedupTable) popHeadLocked() {
	h := &d.ring[d.head]
	if h.state != dedupFree {
		if cur, ok := d.index[h.key]; ok && int(cur) == d.head {
			delete(d.index, h.key)
		}
		h.state = dedupFree
	}
	d.head = (d.head + 1) % len(d.ring)
	d.n--
}

// complete stores the reply sent for the message so a duplicate CON replays it.
func (d *dedupTable) complete(ref dedupRef, reply []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := &d.ring[ref.idx]
	if e.gen != ref.gen || e.state == dedupFree {
		return
	}
	e.resp = append(e.resp[:0], reply...)
	e.state = dedupDone
}

func (d *dedupTable) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.index)
}
