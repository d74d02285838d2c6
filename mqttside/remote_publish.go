package mqttside

import (
	"context"
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Publish hands m to the broker; see [Client.Publish].
func (r *Remote) Publish(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err // not accepted
	}
	p, err := r.enqueue(m)
	if err != nil {
		return err
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrPending, ctx.Err())
	}
}

// PublishOrWithdraw hands m to the broker; see [Client.PublishOrWithdraw].
func (r *Remote) PublishOrWithdraw(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err // not accepted
	}
	p, err := r.enqueue(m)
	if err != nil {
		return err
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
	}
	r.mu.Lock()
	removed := r.buf.Remove(p)
	if removed {
		r.forgetLocked(p)
	}
	handed := p.handed
	r.mu.Unlock()
	switch {
	case removed:
		r.cnt.withdrawn.Add(1)
		r.log.Debug("mqtt publish withdrawn from the offline buffer", "topic", m.Topic)
		return fmt.Errorf("%w: %w", ErrWithdrawn, ctx.Err())
	case !handed:
		// Taken out of the buffer by an eviction or by Close, which
		// settle it right away.
		return <-p.done
	}
	select {
	case err := <-p.done:
		return err
	default:
		return fmt.Errorf("%w: %w", ErrPending, ctx.Err())
	}
}

// enqueue validates m and accepts it into the offline buffer; the result
// arrives on the returned pending's done channel.
func (r *Remote) enqueue(m Message) (*pending, error) {
	if err := validateMessage(m, r.opts.MaxPayload, r.opts.AllowEmptyLevels); err != nil {
		r.cnt.invalid.Add(1)
		return nil, err
	}
	p := newPending(m)
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	evicted, err := r.buf.Push(p)
	if err == nil {
		r.outstanding++
		r.live[p] = struct{}{}
		if r.State() != StateConnected {
			r.cnt.buffered.Add(1)
		}
	}
	if evicted != nil && !r.forgetLocked(evicted) {
		evicted = nil
	}
	r.mu.Unlock()

	if evicted != nil {
		r.cnt.droppedQoS0.Add(1)
		evicted.done <- ErrDropped
		r.log.Debug("mqtt offline buffer full, dropped oldest QoS 0 message", "topic", evicted.msg.Topic)
		if r.opts.OnDropped != nil {
			r.opts.OnDropped(evicted.msg, ErrDropped)
		}
	}
	switch {
	case errors.Is(err, ErrBufferFull):
		r.cnt.refused.Add(1)
		return nil, fmt.Errorf("%w (%d messages)", ErrBufferFull, r.opts.BufferSize)
	case errors.Is(err, ErrDropped):
		r.cnt.droppedQoS0.Add(1)
		return nil, err
	}
	r.signal()
	return p, nil
}

// dispatch hands buffered messages to Paho in order while connected.
func (r *Remote) dispatch() {
	defer r.wg.Done()
	var epoch uint64
	for {
		r.mu.Lock()
		for r.buf.Len() == 0 || r.State() != StateConnected || !r.pc.IsConnectionOpen() {
			r.mu.Unlock()
			select {
			case <-r.wake:
			case <-r.stop:
				return
			}
			r.mu.Lock()
		}
		r.mu.Unlock()
		if e := r.epoch.Load(); e != epoch {
			epoch = e
			if !r.awaitResent() {
				return
			}
			continue // recheck the connection
		}
		r.mu.Lock()
		p := r.buf.Pop()
		if p != nil {
			p.handed = true
		}
		r.mu.Unlock()
		if p == nil {
			continue
		}

		tok := r.pc.Publish(p.msg.Topic, p.msg.QoS, p.msg.Retain, p.msg.Payload)
		if done(tok) && errors.Is(tok.Error(), paho.ErrNotConnected) {
			// Lost the connection between the check and the call: put it
			// back in front to keep order, and wait for the reconnect.
			r.mu.Lock()
			ok := r.buf.PushFront(p)
			p.handed = false // back in the buffer, or settled just below
			r.mu.Unlock()
			if !ok {
				r.settleOne(p, fmt.Errorf("%w: %w", ErrNotConnected, tok.Error()))
			}
			continue
		}
		select {
		case r.inflight <- inflightPub{p: p, tok: tok}:
		case <-r.stop:
			r.settleOne(p, ErrClosed)
			return
		}
	}
}

// awaitResent waits after a (re)connect until the QoS 1/2 messages that
// were in flight at the disconnect, which Paho resends from its session
// store, are acknowledged, so newer messages cannot overtake them and
// order is kept [MQTT-4.6.0-1]. It gives up after ConnectTimeout (the
// messages stay stored and are resent again). It reports false at Close.
func (r *Remote) awaitResent() bool {
	waiting, changed := r.store.outbound()
	if len(waiting) == 0 {
		return true
	}
	r.log.Debug("mqtt waiting for resent messages", "count", len(waiting))
	timeout := time.NewTimer(r.opts.ConnectTimeout)
	defer timeout.Stop()
	for {
		select {
		case <-changed:
		case <-timeout.C:
			r.log.Debug("mqtt resent messages not yet acknowledged, continuing")
			return true
		case <-r.stop:
			return false
		}
		var now map[string]bool
		now, changed = r.store.outbound()
		left := 0
		for k := range waiting {
			if now[k] {
				left++
			}
		}
		if left == 0 {
			return true
		}
	}
}

func done(t paho.Token) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

// settle waits for Paho's tokens in dispatch order and reports results.
func (r *Remote) settle() {
	defer r.wg.Done()
	for {
		select {
		case f := <-r.inflight:
			select {
			case <-f.tok.Done():
				r.settleToken(f)
			case <-r.stop:
				r.settleOne(f.p, ErrClosed)
				r.drainInflight()
				return
			}
		case <-r.stop:
			r.drainInflight()
			return
		}
	}
}

func (r *Remote) drainInflight() {
	for {
		select {
		case f := <-r.inflight:
			err := ErrClosed
			if done(f.tok) {
				err = f.tok.Error()
			}
			r.settleOne(f.p, err)
		default:
			return
		}
	}
}

// settleToken reports a finished Paho token. A QoS 1/2 send cut by a
// disconnect is not lost: Paho stored the message before sending and
// resends it from its session store after the reconnect (clean session
// off), so the publisher learns it is pending, not failed.
func (r *Remote) settleToken(f inflightPub) {
	err := f.tok.Error()
	if err == nil || f.p.msg.QoS == 0 || errors.Is(err, paho.ErrNotConnected) {
		r.settleOne(f.p, err)
		return
	}
	select {
	case <-r.stop:
		r.settleOne(f.p, ErrClosed)
		return
	default:
	}
	r.mu.Lock()
	first := r.forgetLocked(f.p)
	r.mu.Unlock()
	if !first {
		return
	}
	r.cnt.requeued.Add(1)
	r.log.Debug("mqtt publish interrupted, kept for resend", "topic", f.p.msg.Topic, "err", err)
	f.p.done <- fmt.Errorf("%w: resent after reconnect: %w", ErrPending, err)
}

// forgetLocked removes p from the messages not yet settled and reports
// whether it was still there: only the first settlement of a message
// counts and reaches its publisher. r.mu held.
func (r *Remote) forgetLocked(p *pending) bool {
	if _, ok := r.live[p]; !ok {
		return false
	}
	delete(r.live, p)
	r.outstanding--
	return true
}

// settleOne reports the outcome of p to its publisher, once.
func (r *Remote) settleOne(p *pending, err error) {
	r.mu.Lock()
	first := r.forgetLocked(p)
	r.mu.Unlock()
	if !first {
		return
	}
	if err == nil {
		r.cnt.published.Add(1)
	} else {
		r.cnt.failed.Add(1)
		r.log.Debug("mqtt publish failed", "topic", p.msg.Topic, "err", err)
		if !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("mqtt: publish to %s: %w", r.broker, err)
		}
	}
	p.done <- err
}
