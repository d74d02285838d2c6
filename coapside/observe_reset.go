package coapside

import (
	"net"
	"sync"
)

// DefaultResetMemory is how many recent NON notifications an ObserveServer
// remembers to match an RST to its observer.
const DefaultResetMemory = 8192

// nonKey is a NON notification on the wire: the observer's endpoint key and
// the message ID it was sent with.
type nonKey struct {
	endpoint string
	mid      uint16
}

// resetMemory maps the message IDs of recent NON notifications to their
// observers, so an RST to one deregisters the observer (RFC 7641 §3.6).
// It is a fixed-size ring: the oldest entry is forgotten first, and an RST
// arriving after that is ignored (the next CON notification finds out).
type resetMemory struct {
	mu   sync.Mutex
	ring []nonKey
	next int
	ids  map[nonKey]obsID
}

func newResetMemory(size int) *resetMemory {
	if size <= 0 {
		size = DefaultResetMemory
	}
	return &resetMemory{ring: make([]nonKey, size), ids: make(map[nonKey]obsID, size)}
}

// remember records that id's notification went out with mid.
func (r *resetMemory) remember(id obsID, mid uint16) {
	k := nonKey{id.endpoint, mid}
	r.mu.Lock()
	// Message IDs of one endpoint repeat only after 65536 messages, so the
	// entry being overwritten is not a newer one with the same key.
	if old := r.ring[r.next]; old.endpoint != "" {
		delete(r.ids, old)
	}
	r.ring[r.next] = k
	r.next = (r.next + 1) % len(r.ring)
	r.ids[k] = id
	r.mu.Unlock()
}

// take returns and forgets the observer a NON with mid went to.
func (r *resetMemory) take(endpoint string, mid uint16) (obsID, bool) {
	k := nonKey{endpoint, mid}
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.ids[k]
	if ok {
		delete(r.ids, k)
	}
	return id, ok
}

// watchResets makes ep report RSTs that match no tracked message, and
// destinations that report port unreachable, to s.
func (s *ObserveServer) watchResets(ep *Endpoint) {
	if ep.resetHook.Load() != nil {
		return
	}
	hook := func(peer net.Addr, mid uint16) { s.onReset(ep, peer, mid) }
	ep.resetHook.CompareAndSwap(nil, &hook)
	// A client whose port reports unreachable (its socket closed) loses
	// its registrations at once, also after a NON notification, which no
	// timeout would ever catch.
	ep.onUnreachable(func(peer net.Addr) { s.n.Unreachable(endpointKey(ep, peer)) })
}

// onReset deregisters the observer whose NON notification was answered
// with RST (RFC 7641 §3.6).
func (s *ObserveServer) onReset(ep *Endpoint, peer net.Addr, mid uint16) {
	if id, ok := s.resets.take(endpointKey(ep, peer), mid); ok {
		s.n.Reset(id.endpoint, []byte(id.token))
	}
}
