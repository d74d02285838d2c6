package coapside

import (
	"net"
	"net/netip"
	"sync"
)

// unreachQueue holds destinations reported unreachable until they are
// handled. One goroutine handles them at a time: a write made while they
// are handled (a callback starting the next message, say) may drain more,
// which the handling goroutine picks up instead of recursing.
type unreachQueue struct {
	mu   sync.Mutex
	keys []peerKey
	busy bool
}

// queuedError handles an error of a read or write call on the UDP socket
// that an ICMP error queued on the socket caused (Linux reports it on the
// next call, whatever that call's destination): the error queue is
// drained and its destinations handled. It reports whether err was such
// an error, so that the caller neither counts it as its own failure nor
// drops its datagram without trying again.
func (e *Endpoint) queuedError(err error) bool {
	if !e.recverr || !queuedErrno(err) {
		return false
	}
	e.drainErrors()
	return true
}

// drainErrors reads the socket's error queue and fails everything pending
// for each destination that answered with ICMP port unreachable.
func (e *Endpoint) drainErrors() {
	var keys []peerKey
	drainErrQueue(e.udp, func(ap netip.AddrPort) { keys = append(keys, udpPeer(ap).key) })
	if len(keys) == 0 {
		return
	}
	e.stats.Unreachable.Add(uint64(len(keys)))
	q := &e.unreach
	q.mu.Lock()
	q.keys = append(q.keys, keys...)
	if q.busy {
		q.mu.Unlock()
		return
	}
	q.busy = true
	for len(q.keys) > 0 {
		batch := q.keys
		q.keys = nil
		q.mu.Unlock()
		e.failPeers(batch)
		q.mu.Lock()
	}
	q.busy = false
	q.mu.Unlock()
}

// failPeers ends at once what is pending for destinations that reported
// port unreachable, as a timeout would after MAX_TRANSMIT_WAIT: messages
// awaiting an ACK or queued behind NSTART end with Unreachable, requests
// awaiting their response fail with ErrUnreachable, and the unreachable
// hook (the observe server's) hears of each destination.
func (e *Endpoint) failPeers(keys []peerKey) {
	set := make(map[peerKey]struct{}, len(keys))
	for _, k := range keys {
		set[k] = struct{}{}
	}
	type waiting struct {
		key tokenKey
		reg *tokenReg
	}
	var active []*outgoing
	var regs []waiting
	e.mu.Lock()
	for k, og := range e.pending {
		if _, ok := set[k.peer]; ok {
			delete(e.pending, k)
			active = append(active, og)
		}
	}
	for k, reg := range e.tokens {
		// A request without a response yet, also one whose transmission
		// is not bound to it yet (the error of a NON written a moment ago
		// can come back before the write call returns); registrations of
		// notifications alone (RegisterToken) wait on.
		if _, ok := set[k.peer]; ok && reg.request && !reg.delivered {
			regs = append(regs, waiting{k, reg})
		}
	}
	e.mu.Unlock()
	var queued []*outgoing
	t := e.peers
	t.mu.Lock()
	for k := range set {
		if ps := t.peers[k]; ps != nil {
			for _, og := range ps.queue {
				if og != nil && og.state.Load() == ogQueued {
					queued = append(queued, og)
				}
			}
		}
	}
	t.mu.Unlock()
	// Queued ones first, so that a slot freed by an active one does not
	// start them.
	for _, og := range queued {
		og.finish(Unreachable, nil)
	}
	for _, og := range active {
		og.finish(Unreachable, nil)
	}
	for _, w := range regs {
		if e.unregister(w.key, w.reg) {
			p := peerAddr{key: w.key.peer}
			w.reg.fn(nil, p.netAddr(), ErrUnreachable)
		}
	}
	if h := e.unreachHook.Load(); h != nil {
		for k := range set {
			p := peerAddr{key: k}
			(*h)(p.netAddr())
		}
	}
}

// onUnreachable makes the endpoint tell fn of every destination that
// reported port unreachable (the observe server removes its observers);
// the first hook set stays.
func (e *Endpoint) onUnreachable(fn func(peer net.Addr)) {
	e.unreachHook.CompareAndSwap(nil, &fn)
}
