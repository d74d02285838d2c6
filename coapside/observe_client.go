package coapside

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/observe"
)

// Defaults of ObservationOptions.
const (
	DefaultReregisterMargin = 10 * time.Second
	DefaultCancelTimeout    = 5 * time.Second
)

// Notification is one representation of an observed resource: the response
// to the registration or a later notification (RFC 7641 §3.2). A body sent
// block-wise has already been completed.
type Notification struct {
	Code    message.Code
	Options message.Options
	Payload []byte
	// Seq is the Observe option value; HasSeq is false when the response
	// carried none (the resource is not, or no longer, observed).
	Seq    uint32
	HasSeq bool
	// Peer is the server's address.
	Peer net.Addr
	// Received is when the (first block of the) message arrived.
	Received time.Time
}

// ObservationOptions tune one observation. Zero values take the defaults.
type ObservationOptions struct {
	// ReregisterMargin is how long after Max-Age has run out without a
	// notification the client registers again (RFC 7641 §3.3.1). By default
	// it scales with Max-Age: half of it, at least 1 s and at most
	// DefaultReregisterMargin, so a device that rebooted and forgot its
	// observers of a fast-changing resource is registered with again soon.
	ReregisterMargin time.Duration
	// Asleep, when set, reports whether the server is asleep (a device
	// whose radio is off, known to the owner): when Max-Age and the margin
	// pass while it reports true, no re-registration is sent, since it
	// would only go unanswered and end the observation as lost; the
	// observation stays up until the owner calls Reregister (at the
	// server's wake) or it ends. Nor is a deregistration sent when it is
	// cancelled while the server is asleep: it ends at once, forgotten,
	// and the server's next notification is answered RST (RFC 7641 §3.6).
	Asleep func() bool
	// CancelTimeout bounds the deregistration request sent when the
	// observation's context ends. Default 5 s.
	CancelTimeout time.Duration
	// CancelContext, when set, also bounds that deregistration: when it
	// ends (for example at a shutdown deadline shared by many
	// observations) the observation ends without waiting for the answer.
	CancelContext context.Context
	// OnStale, when set, is called for every notification dropped because
	// it is not newer than the latest one (RFC 7641 §3.4), with its Observe
	// value and the latest accepted one. It runs on the socket's read
	// goroutine and must not block.
	OnStale func(seq, latest uint32)
	// OnRestart, when set, is called when the server restarted its
	// sequence numbers (a device that rebooted): the answer to a
	// re-registration carried an Observe value older than the latest one,
	// or a run of notifications went back in a consistent way. The
	// notification is delivered and later ones are judged against it. It
	// runs on the socket's read goroutine and must not block.
	OnRestart func(seq, previous uint32)
}

// Observation is a running observation started by Client.Observe. It ends
// when its context ends or Cancel is called (both deregister with a GET
// Observe=1, RFC 7641 §3.6), when the server ends it (an error or a
// response without Observe, RFC 7641 §3.2), when a re-registration gets no
// answer, or when the client closes. Done and Err report the end, so the
// owner can observe again with backoff or fall back to polling.
type Observation struct {
	c     *Client
	req   *Request // registration request template (Observe=0)
	peer  net.Addr
	token []byte
	fn    func(Notification)
	opts  ObservationOptions
	done  chan struct{}
	first chan *message.Message

	stats ObservationStats
	// heard is when the server last sent a response with the token (Unix
	// nanoseconds).
	heard atomic.Int64

	mu        sync.Mutex
	tracker   observe.Tracker
	gotFirst  bool
	ready     bool // the first notification was delivered by Observe
	pending   *pendingNote
	running   bool
	canceling bool
	ended     bool
	// reregistering is set while a re-registration request is in flight;
	// rereg is its transmission, and byOwner tells that Reregister sent
	// it (not Max-Age running out). regGen numbers the re-registrations.
	reregistering bool
	rereg         *outgoing
	byOwner       bool
	regGen        uint64
	// answerDue is set from sending a re-registration until its answer
	// arrives; separateDue once the server acknowledged it with an empty
	// ACK, so the answer comes as a separate response (RFC 7252 §5.2.2).
	answerDue   bool
	separateDue bool
	// echoTried is set once a registration was repeated with the Echo
	// value of a 4.01 answer, until a registration is answered otherwise.
	echoTried bool
	err       error
	maxAge    uint32
	timer     *time.Timer
	unreg     func()
	stopCtx   func() bool
	afterDone []func()
	wg        sync.WaitGroup
}

// ObservationStats counts one observation's events with atomic counters,
// for metrics.
type ObservationStats struct {
	Delivered       atomic.Uint64 // representations given to the callback
	Stale           atomic.Uint64 // older or repeated notifications dropped (RFC 7641 §3.4)
	Restarts        atomic.Uint64 // times the server's sequence restarted (a reboot)
	Superseded      atomic.Uint64 // fresh ones replaced by a newer one before delivery
	Reregistrations atomic.Uint64 // registrations sent again: after Max-Age or by Reregister (RFC 7641 §3.3.1)
	BlockErrors     atomic.Uint64 // notifications dropped because their body could not be completed
}

// Stats returns the observation's counters.
func (o *Observation) Stats() *ObservationStats { return &o.stats }

// pendingNote is the latest accepted message not yet delivered.
type pendingNote struct {
	m  *message.Message
	at time.Time
}

// Observe registers interest in url (GET with Observe=0, RFC 7641 §3.1) and
// calls fn with the response and every fresh notification, in order, one at
// a time and never on the socket's read goroutine. Stale and duplicate
// notifications are dropped (RFC 7641 §3.4); the answer to a re-registration
// is always fresh and restarts the sequence. CON notifications are
// acknowledged and notifications for unknown tokens rejected with RST by the
// endpoint.
//
// Observe returns after fn has seen the first response. When the server
// answers without Observe the resource is not observable: fn still gets the
// response and the error wraps ErrNotObservable. An error code is returned
// as an error wrapping the message.Code.
func (c *Client) Observe(ctx context.Context, url string, fn func(Notification), opts ...RequestOption) (*Observation, error) {
	req, err := NewRequest(message.GET, url, nil)
	if err != nil {
		return nil, err
	}
	for _, o := range opts {
		o(req)
	}
	return c.ObserveRequest(ctx, req, fn, ObservationOptions{})
}

// ObserveRequest is Observe for a prepared GET or FETCH request.
func (c *Client) ObserveRequest(ctx context.Context, req *Request, fn func(Notification), oo ObservationOptions) (*Observation, error) {
	if oo.CancelTimeout <= 0 {
		oo.CancelTimeout = DefaultCancelTimeout
	}
	peer, err := c.Resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	// The template keeps what later requests need: the resolved peer
	// instead of the URL, and the options with Observe.
	tmpl := Request{
		Method:  req.Method,
		Type:    message.Confirmable,
		Options: append(make(message.Options, 0, len(req.Options)+1), req.Options...).SetUint(message.Observe, observe.Register),
		Peer:    peer,
	}
	tok := req.Token
	if len(tok) == 0 {
		tok = NewToken()
	}
	o := &Observation{
		c: c, req: &tmpl, peer: peer, token: tok, fn: fn, opts: oo,
		done:  make(chan struct{}),
		first: make(chan *message.Message, 1),
	}
	o.unreg, err = c.ep.RegisterToken(peer, tok, o.onResponse)
	if err != nil {
		return nil, fmt.Errorf("coap observe %s: %w", target(req, peer), err)
	}
	if err := o.send(observe.Register, o.onRegisterOutcome); err != nil {
		o.end(err)
		return nil, fmt.Errorf("coap observe %s: %w", target(req, peer), err)
	}
	wait := time.NewTimer(c.timeout)
	defer wait.Stop()
	var resp *message.Message
	select {
	case resp = <-o.first:
	case <-o.done:
		return nil, fmt.Errorf("coap observe %s: %w", target(req, peer), o.Err())
	case <-wait.C:
		o.end(ErrTimeout)
		return nil, fmt.Errorf("coap observe %s: %w", target(req, peer), ErrTimeout)
	case <-ctx.Done():
		o.end(ctx.Err())
		return nil, fmt.Errorf("coap observe %s: %w", target(req, peer), ctx.Err())
	}
	if resp.Code.IsError() {
		o.end(resp.Code)
		return nil, fmt.Errorf("coap observe %s: %w", target(req, peer), resp.Code)
	}
	_, observed := resp.Options.Observe()
	o.deliver(ctx, resp, time.Now())
	if !observed {
		// RFC 7641 §3.1: no Observe in the response means no registration.
		o.end(ErrNotObservable)
		return nil, fmt.Errorf("coap observe %s: %w", target(req, peer), ErrNotObservable)
	}
	o.mu.Lock()
	o.ready = true
	o.maxAge = maxAgeOf(resp)
	o.timer = time.AfterFunc(o.reregisterIn(), o.maxAgePassed)
	if o.pending != nil && !o.running && !o.ended {
		o.running = true
		o.wg.Add(1)
		go o.drain()
	}
	o.first = nil // registration done; onResponse no longer uses it
	o.mu.Unlock()
	if ctx.Done() == nil {
		return o, nil // a context that never ends needs no watcher
	}
	stop := context.AfterFunc(ctx, func() {
		parent := o.opts.CancelContext
		if parent == nil {
			parent = context.Background()
		}
		cctx, cancel := context.WithTimeout(parent, o.opts.CancelTimeout)
		defer cancel()
		_ = o.Cancel(cctx)
	})
	o.mu.Lock()
	if o.ended {
		o.mu.Unlock()
		stop()
	} else {
		o.stopCtx = stop
		o.mu.Unlock()
	}
	return o, nil
}

// Done is closed when the observation has ended.
func (o *Observation) Done() <-chan struct{} { return o.done }

// Err returns why the observation ended (nil while it runs): ErrCanceled,
// ErrObservationEnded (wrapping the code of an error notification),
// ErrObservationLost, ErrClosed, or the context's error.
func (o *Observation) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// Wait blocks until the observation has ended and no callback is running.
// It must not be called from the callback.
func (o *Observation) Wait() {
	<-o.done
	o.wg.Wait()
}

// Token returns the observation's token.
func (o *Observation) Token() []byte { return o.token }

// Cancel deregisters the observation with a GET Observe=1 (RFC 7641 §3.6),
// waiting for the answer until ctx ends, and ends it with ErrCanceled; with
// a server asleep (ObservationOptions.Asleep) it only ends it. It is
// idempotent and safe to call from the notification callback.
func (o *Observation) Cancel(ctx context.Context) error {
	o.mu.Lock()
	if o.ended || o.canceling {
		o.mu.Unlock()
		return nil
	}
	o.canceling = true
	o.mu.Unlock()
	if o.opts.Asleep != nil && o.opts.Asleep() {
		// The deregistration would go unanswered: the observation is
		// forgotten, and the server's next notification gets RST.
		o.end(ErrCanceled)
		return nil
	}
	outcome := make(chan Outcome, 1)
	err := o.send(observe.Deregister, func(oc Outcome, _ *message.Message) { outcome <- oc })
	if err == nil {
		select {
		case oc := <-outcome:
			err = oc.Err()
		case <-ctx.Done():
			err = ctx.Err()
		case <-o.done:
		}
	}
	o.end(ErrCanceled)
	if err != nil {
		return fmt.Errorf("coap observe cancel: %w", err)
	}
	return nil
}

// send transmits the registration request with the given Observe value and
// the observation's token (RFC 7641 §3.3.1 allows re-registering with it).
func (o *Observation) send(obs uint32, cb OutcomeFunc) error {
	m := o.req.Message()
	m.Token = o.token
	m.Options = o.req.Options.Clone().SetUint(message.Observe, obs)
	return o.c.ep.SendAsync(o.peer, m, cb)
}

// onRegisterOutcome ends the observation when a (re-)registration request
// was rejected or never acknowledged.
func (o *Observation) onRegisterOutcome(oc Outcome, _ *message.Message) {
	switch oc {
	case ResetByPeer, TimedOut, Unreachable:
		o.end(fmt.Errorf("%w: %w", ErrObservationLost, oc.Err()))
	}
}

// onResponse receives every response with the token on the read goroutine:
// it applies the freshness rule and hands the latest fresh message to the
// delivery goroutine (RFC 7641 §3.4). It never blocks.
//
// The answer to a re-registration answers a request just sent, so it is
// fresh whatever its Observe value, and later notifications are judged
// against it: a device that rebooted has forgotten its observers and starts
// its sequence again from a low number, which the freshness rule alone would
// take for stale until the new numbers pass the old ones or 128 seconds go
// by. With the same token for both (RFC 7641 §3.3.1), the answer is the
// piggybacked response in the ACK of the re-registration, or the first
// response after an empty ACK.
func (o *Observation) onResponse(m *message.Message, _ net.Addr, err error) bool {
	if err != nil {
		o.end(err)
		return false
	}
	now := time.Now()
	o.heard.Store(now.UnixNano())
	o.mu.Lock()
	if o.ended || o.canceling {
		keep := !o.ended
		o.mu.Unlock()
		return keep
	}
	seq, hasSeq := m.Options.Observe()
	seq &= observe.SeqMask
	latest, _, had := o.tracker.Last()
	answer := o.gotFirst && o.answerDue && (m.Type == message.Acknowledgement || o.separateDue)
	if answer {
		o.answerDue, o.separateDue = false, false
	}
	if echo, ok := echoChallenge(m.Code, m.Options); ok && (answer || !o.gotFirst) && !o.echoTried {
		// RFC 9175 §2.3: the server wants the registration again with
		// its Echo value before it accepts it.
		o.echoTried = true
		o.answerDue, o.separateDue = o.gotFirst, false
		o.mu.Unlock()
		o.registerWithEcho(echo)
		return true
	}
	if answer || !o.gotFirst {
		o.echoTried = false
	}
	restarted := false
	switch {
	case !hasSeq:
	case answer:
		o.tracker.Clear()
		o.tracker.Check(seq, now)
		restarted = had && seq != latest && !observe.Newer(latest, seq)
	default:
		v := o.tracker.Check(seq, now)
		if !v.Accepted() {
			o.mu.Unlock()
			o.stats.Stale.Add(1)
			if fn := o.opts.OnStale; fn != nil {
				fn(seq, latest)
			}
			return true
		}
		restarted = v == observe.Reset
	}
	if restarted {
		o.stats.Restarts.Add(1)
		defer func() {
			if fn := o.opts.OnRestart; fn != nil {
				fn(seq, latest)
			}
		}()
	}
	if !o.gotFirst {
		o.gotFirst = true
		first := o.first
		o.mu.Unlock()
		first <- m
		return true
	}
	if o.pending != nil {
		o.stats.Superseded.Add(1)
	}
	o.pending = &pendingNote{m: m, at: now}
	if o.ready && !o.running {
		o.running = true
		o.wg.Add(1)
		go o.drain()
	}
	o.mu.Unlock()
	return true
}

// drain delivers pending notifications one at a time until none is left.
func (o *Observation) drain() {
	defer o.wg.Done()
	for {
		o.mu.Lock()
		p := o.pending
		o.pending = nil
		if p == nil || o.ended {
			o.running = false
			o.mu.Unlock()
			return
		}
		if _, ok := p.m.Options.Observe(); ok {
			o.maxAge = maxAgeOf(p.m)
			o.timer.Reset(o.reregisterIn())
		}
		o.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), o.c.timeout)
		o.deliver(ctx, p.m, p.at)
		cancel()
		if _, ok := p.m.Options.Observe(); !ok || p.m.Code.IsError() {
			// RFC 7641 §3.2: an error or a response without Observe ends
			// the observation.
			reason := ErrObservationEnded
			if p.m.Code.IsError() {
				o.end(fmt.Errorf("%w: %w", reason, p.m.Code))
			} else {
				o.end(reason)
			}
		}
	}
}

// deliver completes a block-wise body (RFC 7959 §3.4) and calls fn.
func (o *Observation) deliver(ctx context.Context, m *message.Message, at time.Time) {
	n := Notification{Code: m.Code, Options: m.Options, Payload: m.Payload, Peer: o.peer, Received: at}
	n.Seq, n.HasSeq = m.Options.Observe()
	if m.Options.Has(message.Block2) && !m.Code.IsError() {
		resp := &Response{Code: m.Code, Type: m.Type, MessageID: m.MessageID, Token: m.Token, Options: m.Options, Payload: m.Payload, Peer: o.peer}
		full, err := o.c.fetchBlock2(ctx, o.req, resp)
		if err != nil {
			o.stats.BlockErrors.Add(1)
			o.c.ep.log.Debug("coap observe: notification body incomplete", "peer", o.peer.String(), "err", err)
			return
		}
		n.Options, n.Payload = full.Options, full.Payload
	}
	o.stats.Delivered.Add(1)
	o.fn(n)
}

// reregisterIn is the time until re-registration (RFC 7641 §3.3.1). o.mu held.
func (o *Observation) reregisterIn() time.Duration {
	now := time.Now()
	return observe.ReregisterAt(now, o.maxAge, reregisterMargin(o.opts.ReregisterMargin, o.maxAge)).Sub(now)
}

// reregisterMargin is the configured margin, or by default half of Max-Age
// within [1 s, DefaultReregisterMargin].
func reregisterMargin(configured time.Duration, maxAge uint32) time.Duration {
	if configured > 0 {
		return configured
	}
	return min(max(time.Duration(maxAge)*time.Second/2, time.Second), DefaultReregisterMargin)
}

// LastHeard returns when the server last sent a response or notification
// for the observation (the zero time before any).
func (o *Observation) LastHeard() time.Time {
	if n := o.heard.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Reregister sends the registration again now, with the same token, as the
// observation does itself when Max-Age and the margin pass without a
// notification: a client may re-register at any time (RFC 7641 §3.3.1), for
// example when the server may have forgotten it (a sleepy device that
// drops its observers while its radio is off, now awake again). The answer
// is fresh whatever its Observe value, and an unanswered re-registration
// ends the observation as lost. A re-registration Max-Age started that is
// still unanswered (retransmitted, say, while the server slept) is given
// up for the new one, which frees its place among the requests to the
// server (NSTART); one Reregister started is left to run. Nothing is sent
// once the observation is cancelled or ended.
func (o *Observation) Reregister() { o.reregister(true) }

// maxAgePassed runs when Max-Age and the margin passed without a
// notification: it re-registers, unless the owner says the server is
// asleep (ObservationOptions.Asleep); then the owner's Reregister does,
// when it wakes.
func (o *Observation) maxAgePassed() {
	if o.opts.Asleep != nil && o.opts.Asleep() {
		return
	}
	o.reregister(false)
}

// reregister sends a new registration with the same token when Max-Age and
// the margin passed without a notification, or when the owner asks.
func (o *Observation) reregister(byOwner bool) {
	o.mu.Lock()
	if o.ended || o.canceling || o.reregistering && (o.byOwner || !byOwner) {
		o.mu.Unlock()
		return
	}
	replaced := o.rereg
	o.rereg = nil
	o.reregistering, o.byOwner = true, byOwner
	o.answerDue, o.separateDue = true, false
	o.regGen++
	gen := o.regGen
	o.mu.Unlock()
	replaced.abandon() // no outcome: the new one's reports for both
	o.stats.Reregistrations.Add(1)
	m := o.req.Message()
	m.Token = o.token
	m.Options = o.req.Options.Clone().SetUint(message.Observe, observe.Register)
	og, err := o.c.ep.transmit(resolvePeer(o.peer), m, func(oc Outcome, ack *message.Message) {
		o.mu.Lock()
		if gen != o.regGen {
			o.mu.Unlock()
			return // a later re-registration took over
		}
		o.reregistering, o.rereg = false, nil
		if oc == Acknowledged && ack != nil && ack.Code == message.Empty && o.answerDue {
			o.separateDue = true // the answer follows separately
		}
		if oc == Acknowledged && !o.ended {
			// Acknowledged (the response may follow separately): try
			// again after another period if no notification comes.
			o.timer.Reset(o.reregisterIn())
		}
		o.mu.Unlock()
		o.onRegisterOutcome(oc, nil)
	}, nstartCON, nil)
	if err != nil {
		o.end(fmt.Errorf("%w: %w", ErrObservationLost, err))
		return
	}
	o.mu.Lock()
	superseded := gen != o.regGen
	if !superseded && o.reregistering {
		o.rereg = og
	}
	o.mu.Unlock()
	if superseded {
		// The owner's re-registration came while this one was being
		// sent, before it could be given up: it is given up now, so the
		// newer one does not wait behind it.
		og.abandon()
	}
}

// registerWithEcho repeats the registration with the Echo value the
// server sent in a 4.01 (RFC 9175 §2.3).
func (o *Observation) registerWithEcho(echo []byte) {
	m := o.req.Message()
	m.Token = o.token
	m.Options = o.req.Options.Clone().SetUint(message.Observe, observe.Register).SetEcho(echo)
	err := o.c.ep.SendAsync(o.peer, m, func(oc Outcome, ack *message.Message) {
		o.mu.Lock()
		if oc == Acknowledged && ack != nil && ack.Code == message.Empty && o.answerDue {
			o.separateDue = true // the answer follows separately
		}
		o.mu.Unlock()
		o.onRegisterOutcome(oc, nil)
	})
	if err != nil {
		o.end(fmt.Errorf("%w: %w", ErrObservationLost, err))
	}
}

// end stops the observation once with reason.
func (o *Observation) end(reason error) {
	o.mu.Lock()
	if o.ended {
		o.mu.Unlock()
		return
	}
	o.ended = true
	o.err = reason
	o.pending = nil
	if o.timer != nil {
		o.timer.Stop()
	}
	stop := o.stopCtx
	after := o.afterDone
	o.afterDone = nil
	o.mu.Unlock()
	if o.unreg != nil {
		o.unreg()
	}
	if stop != nil {
		stop()
	}
	close(o.done)
	for _, f := range after {
		go f()
	}
}

// AfterDone arranges for f to run in its own goroutine once the
// observation has ended, at once if it has, as context.AfterFunc does for
// a context: its owner needs no goroutine waiting on Done while the
// observation runs.
func (o *Observation) AfterDone(f func()) {
	o.mu.Lock()
	if !o.ended {
		o.afterDone = append(o.afterDone, f)
		o.mu.Unlock()
		return
	}
	o.mu.Unlock()
	go func() {
		<-o.done // end closes it just after setting ended
		f()
	}()
}

// maxAgeOf returns a response's Max-Age, DefaultMaxAge when absent.
func maxAgeOf(m *message.Message) uint32 {
	if m.Options.Has(message.MaxAge) {
		return m.Options.MaxAge()
	}
	return observe.DefaultMaxAge
}
