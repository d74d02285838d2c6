package observe

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Notify hands a new state of path to every observer of it and returns how
// many there are. It never blocks on the network: each observer keeps only
// the latest state not yet sent, and the workers send it when the
// observer's previous notification is done (RFC 7641 §4.5.2).
func (n *Notifier) Notify(path string, st State) int {
	s := &st
	n.mu.Lock()
	defer n.mu.Unlock()
	res := n.resources[path]
	if res == nil || n.closed {
		return 0
	}
	res.last = s
	for _, o := range res.observers {
		if o.pending != nil {
			n.stats.Superseded++
		}
		o.pending = s
		n.enqueueLocked(o)
	}
	n.cond.Broadcast()
	return len(res.observers)
}

func (n *Notifier) enqueueLocked(o *observer) {
	if o.queued || o.inflight || o.removed || o.deferred || o.pending == nil {
		return
	}
	o.queued = true
	n.queue.push(o)
}

// Run starts the workers and blocks until ctx is canceled; then it stops
// them, waits for every Send they started to return, and returns nil.
// Sends in progress see ctx canceled. After Run returns the Notifier
// accepts no registrations. Run may be called once; later calls return
// ErrClosed.
func (n *Notifier) Run(ctx context.Context) error {
	n.mu.Lock()
	if n.running || n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	n.running = true
	n.mu.Unlock()

	var wg sync.WaitGroup
	for range n.opts.Workers {
		wg.Go(func() { n.work(ctx) })
	}
	wg.Go(func() { n.checkLoop(ctx) })
	<-ctx.Done()
	n.mu.Lock()
	n.closed = true
	n.cond.Broadcast()
	n.mu.Unlock()
	wg.Wait()
	return nil
}

// work sends queued notifications until the Notifier closes.
func (n *Notifier) work(ctx context.Context) {
	for {
		n.mu.Lock()
		for n.queue.len() == 0 && !n.closed {
			n.cond.Wait()
		}
		if n.closed {
			n.mu.Unlock()
			return
		}
		o := n.queue.pop()
		o.queued = false
		if o.removed || o.inflight || o.pending == nil {
			n.mu.Unlock()
			continue
		}
		st := o.pending
		o.pending = nil
		o.inflight = true
		o.seq = NextSeq(o.seq)
		now := n.opts.Now()
		// RFC 7641 §4.5: NON by default, CON at least every ConEvery
		// notifications and at least every ConInterval (24 h).
		con := int(o.sinceCON)+1 >= n.opts.ConEvery ||
			now.UnixNano()-o.lastCON >= int64(n.opts.ConInterval)
		msg := Notification{Observer: o.public(), State: *st, Seq: o.seq, Confirmable: con}
		n.mu.Unlock()

		if n.async != nil {
			n.async.SendAsync(ctx, msg, func(err error) { n.complete(ctx, o, msg, err) })
			continue
		}
		n.complete(ctx, o, msg, n.sender.Send(ctx, msg))
	}
}

// complete records the outcome of one notification and queues the
// observer's next pending state, if any.
func (n *Notifier) complete(ctx context.Context, o *observer, msg Notification, err error) {
	var reason error
	n.mu.Lock()
	o.inflight = false
	switch {
	case err == nil:
		n.stats.Sent++
		if msg.Confirmable {
			n.stats.Confirmable++
			o.sinceCON = 0
			o.lastCON = n.opts.Now().UnixNano()
		} else {
			o.sinceCON++
		}
		if msg.Code.IsError() {
			reason = ErrFinal
		}
	case errors.Is(err, ErrReset):
		n.stats.Resets++
		reason = ErrReset
	case errors.Is(err, ErrTimeout):
		n.stats.Timeouts++
		reason = ErrTimeout
	case errors.Is(err, ErrUnreachable):
		reason = ErrUnreachable // counted below, by observers removed
	case errors.Is(err, ErrDeferred):
		// No room to send now: the latest state waits for the next
		// retry tick, instead of failing again at every Notify.
		n.stats.Deferred++
		if !o.removed && !n.closed {
			if o.pending == nil {
				st := msg.State
				o.pending = &st
			}
			if !o.deferred {
				o.deferred = true
				n.deferred = append(n.deferred, o)
			}
		}
	case ctx.Err() != nil:
		// Shutting down: not the observer's fault.
	case o.removed:
		// Canceled because the observer went meanwhile.
	default:
		n.stats.SendErrors++
		n.opts.Logger.LogAttrs(ctx, slog.LevelDebug, "observe notification failed",
			slog.String("path", msg.Path), slog.String("endpoint", msg.Endpoint), slog.Any("err", err))
	}
	removed := false
	if reason != nil && !o.removed {
		n.removeLocked(o)
		removed = true
	}
	var gone []Observer
	if reason == ErrTimeout || reason == ErrUnreachable {
		// A client that acknowledged nothing through every
		// retransmission, or whose port is closed, is unreachable: its
		// other registrations go too, at once, instead of one per
		// failed notification.
		gone = n.removeEndpointLocked(msg.Endpoint)
	}
	if reason == ErrUnreachable {
		n.stats.Unreachable += uint64(len(gone))
		if removed {
			n.stats.Unreachable++
		}
	}
	if !n.closed {
		n.enqueueLocked(o)
		if o.queued {
			n.cond.Signal()
		}
	}
	n.mu.Unlock()
	if removed {
		n.deregistered(msg.Observer, reason)
	}
	for _, g := range gone {
		n.deregistered(g, reason)
	}
}

// checkLoop retries deferred notifications and, with a CheckInterval,
// runs check, every quarter CheckInterval (DefaultRetryInterval without)
// until ctx ends.
func (n *Notifier) checkLoop(ctx context.Context) {
	every := DefaultRetryInterval
	if n.opts.CheckInterval > 0 {
		every = max(n.opts.CheckInterval/4, time.Millisecond)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.retryDeferred()
			if n.opts.CheckInterval > 0 {
				n.check()
			}
		}
	}
}

// retryDeferred queues once more the observers whose notification was
// deferred since the last tick.
func (n *Notifier) retryDeferred() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.deferred) == 0 || n.closed {
		return
	}
	for i, o := range n.deferred {
		n.deferred[i] = nil
		o.deferred = false
		n.enqueueLocked(o)
	}
	n.deferred = n.deferred[:0]
	n.cond.Broadcast()
}

// check queues the latest state, as a confirmable notification, for every
// idle observer whose last confirmed contact is CheckInterval old, so an
// observer that has gone away (its socket closed, its host down) is found
// by a CON that is never acknowledged or is reset, even when the resource
// does not change (RFC 7641 §4.5: the server checks the client's
// interest with a confirmable notification).
func (n *Notifier) check() {
	now := n.opts.Now().UnixNano()
	var need []string // due resources without a notified state
	n.mu.Lock()
	for path, res := range n.resources {
		if !n.dueLocked(res, now) {
			continue
		}
		if res.last == nil {
			need = append(need, path)
			continue
		}
		n.checkLocked(res, now)
	}
	n.mu.Unlock()
	if n.opts.Current == nil {
		return
	}
	for _, path := range need {
		st, ok := n.opts.Current(path) // runs a handler: no lock held
		if !ok {
			continue
		}
		n.mu.Lock()
		if res := n.resources[path]; res != nil && !n.closed {
			if res.last == nil {
				res.last = &st
			}
			n.checkLocked(res, now)
		}
		n.mu.Unlock()
	}
}

// dueLocked reports whether an idle observer of res needs a check at now.
func (n *Notifier) dueLocked(res *resource, now int64) bool {
	for _, o := range res.observers {
		if n.idleDueLocked(o, now) {
			return true
		}
	}
	return false
}

func (n *Notifier) idleDueLocked(o *observer, now int64) bool {
	return !o.inflight && !o.queued && o.pending == nil && !o.removed &&
		now-o.lastCON >= int64(n.opts.CheckInterval)
}

// checkLocked queues res's latest state for its idle observers due a check;
// the worker sends it confirmable, their last confirmed contact being at
// least ConInterval old.
func (n *Notifier) checkLocked(res *resource, now int64) {
	queued := false
	for _, o := range res.observers {
		if !n.idleDueLocked(o, now) {
			continue
		}
		o.pending = res.last
		n.enqueueLocked(o)
		n.stats.Checks++
		queued = true
	}
	if queued {
		n.cond.Broadcast()
	}
}

// ring is a growable FIFO of observers.
type ring struct {
	buf        []*observer
	head, size int
}

func (r *ring) len() int { return r.size }

func (r *ring) push(o *observer) {
	if r.size == len(r.buf) {
		nb := make([]*observer, max(16, 2*len(r.buf)))
		for i := range r.size {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = o
	r.size++
}

func (r *ring) pop() *observer {
	o := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return o
}
