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

// dedupInline is the longest reply kept in its slot; longer ones go to
// dedupTable.big. An ACK with an 8-byte token and a few options fits.
const dedupInline = 40

// Address families of a flatKey. flatOther marks a key the flat form
// cannot hold (a zoned IPv6 address or a non-UDP peer): it is kept in
// dedupTable.other instead.
const (
	flatOther uint8 = iota
	flat4
	flat6
)

// flatKey is a dedupKey without pointers: a UDP peer's address and port and
// the message ID. The garbage collector does not scan a map or a slice of
// them.
type flatKey struct {
	ip   [16]byte
	port uint16
	mid  uint16
	fam  uint8
}

// flatten returns the pointer-free form of k, or ok false when k needs the
// general map (a zone or a non-UDP peer).
func flatten(k dedupKey) (flatKey, bool) {
	a := k.peer.ap.Addr()
	if k.peer.str != "" || !a.IsValid() || a.Zone() != "" {
		return flatKey{}, false
	}
	f := flatKey{ip: a.As16(), port: k.peer.ap.Port(), mid: k.mid, fam: flat6}
	if a.Is4() {
		f.fam = flat4
	}
	return f, true
}

// dedupEntry is one slot of the ring. It holds no pointers, so the ring
// (16,384 slots by default) is not scanned by the garbage collector; a
// reply longer than dedupInline is kept in dedupTable.big.
type dedupEntry struct {
	key     flatKey // fam flatOther: the key is in dedupTable.otherKeys
	expires int64   // unix nanoseconds
	gen     uint32
	state   uint8
	big     bool   // the reply is in dedupTable.big
	respLen uint16 // length of the inline reply
	resp    [dedupInline]byte
}

// dedupRef points at a dedup slot; gen guards against slot reuse.
type dedupRef struct {
	idx int32
	gen uint32
}

// dedupTable is a fixed-capacity FIFO ring of recently received message IDs
// keyed by (peer, MID). Entries expire after their lifetime; when the ring is
// full the oldest live entry is evicted and counted. Reply buffers are
// reused between slots, so steady-state operation does not allocate.
//
// The ring and the index of UDP peers hold no pointers: a server's table is
// most of its live heap, and the garbage collector skips it.
type dedupTable struct {
	mu    sync.Mutex
	index map[flatKey]int32
	ring  []dedupEntry
	head  int
	n     int
	stats *Stats

	// other indexes the keys flatten cannot hold; otherKeys has the key of
	// each such slot in use. Both stay empty for UDP peers without zones.
	other     map[dedupKey]int32
	otherKeys map[int32]dedupKey
	// big holds, by slot, the buffer for replies longer than dedupInline.
	// A slot keeps its buffer for the next long reply.
	big map[int32][]byte
}

func newDedupTable(capacity int, stats *Stats) *dedupTable {
	return &dedupTable{
		index:     make(map[flatKey]int32, capacity),
		ring:      make([]dedupEntry, capacity),
		stats:     stats,
		other:     make(map[dedupKey]int32),
		otherKeys: make(map[int32]dedupKey),
		big:       make(map[int32][]byte),
	}
}

// dedupResult is what begin found.
type dedupResult uint8

const (
	dedupNew       dedupResult = iota // first copy: process it
	dedupDupBusy                      // duplicate, still being processed: ignore
	dedupDupReplay                    // duplicate with a cached reply: re-send it
)

func (d *dedupTable) lookupLocked(key dedupKey, fk flatKey, flat bool) (int32, bool) {
	if flat {
		idx, ok := d.index[fk]
		return idx, ok
	}
	idx, ok := d.other[key]
	return idx, ok
}

func (d *dedupTable) deleteLocked(idx int32) {
	e := &d.ring[idx]
	if e.key.fam != flatOther {
		if cur, ok := d.index[e.key]; ok && cur == idx {
			delete(d.index, e.key)
		}
		return
	}
	k := d.otherKeys[idx]
	delete(d.otherKeys, idx)
	if cur, ok := d.other[k]; ok && cur == idx {
		delete(d.other, k)
	}
}

// begin records a received message. For a duplicate with a cached reply, the
// reply is appended to scratch and returned.
func (d *dedupTable) begin(key dedupKey, now time.Time, lifetime time.Duration, scratch []byte) (dedupRef, dedupResult, []byte) {
	nowNs := now.UnixNano()
	fk, flat := flatten(key)
	d.mu.Lock()
	defer d.mu.Unlock()
	if idx, ok := d.lookupLocked(key, fk, flat); ok {
		e := &d.ring[idx]
		if e.expires > nowNs {
			if e.state == dedupDone {
				if e.big {
					return dedupRef{}, dedupDupReplay, append(scratch[:0], d.big[idx]...)
				}
				if e.respLen > 0 {
					return dedupRef{}, dedupDupReplay, append(scratch[:0], e.resp[:e.respLen]...)
				}
			}
			return dedupRef{}, dedupDupBusy, nil
		}
		d.deleteLocked(idx)
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
	e.expires = nowNs + int64(lifetime)
	e.gen++
	e.state = dedupInProgress
	e.big = false
	e.respLen = 0
	if flat {
		e.key = fk
		d.index[fk] = int32(idx)
	} else {
		e.key = flatKey{}
		d.other[key] = int32(idx)
		d.otherKeys[int32(idx)] = key
	}
	return dedupRef{idx: int32(idx), gen: e.gen}, dedupNew, nil
}

func (d *dedupTable) popHeadLocked() {
	h := &d.ring[d.head]
	if h.state != dedupFree {
		d.deleteLocked(int32(d.head))
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
	if len(reply) <= dedupInline {
		e.respLen = uint16(copy(e.resp[:], reply))
		e.big = false
	} else {
		d.big[ref.idx] = append(d.big[ref.idx][:0], reply...)
		e.big = true
	}
	e.state = dedupDone
}

func (d *dedupTable) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.index) + len(d.other)
}
