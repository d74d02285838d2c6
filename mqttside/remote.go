package mqttside

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Remote is a [Client] for an existing broker, over Paho (MQTT 3.1.1).
//
// Publishes go through one dispatcher goroutine in arrival order, so order
// is kept per topic across disconnects. While disconnected they wait in
// the bounded offline buffer (see offlineBuffer for what happens when it
// is full). QoS 1/2 messages already handed to the connection stay in
// Paho's session store and are resent after a reconnect (clean session is
// off), so nothing accepted is silently lost; QoS 0 messages caught in the
// moment of a disconnect can be lost, as QoS 0 allows.
type Remote struct {
	opts   RemoteOptions
	broker string // redacted URL, for logs and errors
	log    *slog.Logger
	pc     paho.Client
	cnt    counters
	state  atomic.Int32
	ever   atomic.Bool // connected at least once

	mu          sync.Mutex
	buf         *offlineBuffer
	subs        map[string]remoteSub
	unsubs      map[string]bool // to send on the next connect
	outstanding int             // accepted, not yet settled
	closing     bool
	started     bool

	up       chan struct{} // closed by the first onConnect
	upOnce   sync.Once
	wake     chan struct{} // cap 1: buffer or state changed
	inflight chan inflightPub
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

type remoteSub struct {
	qos byte
	cb  paho.MessageHandler
}

type inflightPub struct {
	p   *pending
	tok paho.Token
}

var _ Client = (*Remote)(nil)

// NewRemote checks opts and prepares a client; Start connects.
func NewRemote(opts RemoteOptions) (*Remote, error) {
	opts.SetDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	u, err := brokerURL(opts.Broker)
	if err != nil {
		return nil, err
	}
	r := &Remote{
		opts:     opts,
		broker:   u.Redacted(),
		log:      opts.Logger.With("broker", u.Redacted()),
		buf:      newOfflineBuffer(opts.BufferSize),
		subs:     make(map[string]remoteSub),
		unsubs:   make(map[string]bool),
		up:       make(chan struct{}),
		wake:     make(chan struct{}, 1),
		inflight: make(chan inflightPub, opts.MaxInflight),
		stop:     make(chan struct{}),
	}
	po, err := r.pahoOptions(u)
	if err != nil {
		return nil, err
	}
	r.pc = paho.NewClient(po)
	return r, nil
}

func (r *Remote) pahoOptions(u *url.URL) (*paho.ClientOptions, error) {
	o := r.opts
	po := paho.NewClientOptions()
	po.AddBroker(u.String())
	po.SetClientID(o.ClientID)
	po.SetUsername(o.Username)
	po.SetPassword(o.Password.Reveal())
	po.SetCleanSession(false) // keep subscriptions and QoS 1/2 state across reconnects [MQTT-3.1.2-4]
	po.SetAutoAckDisabled(true)
	po.SetOrderMatters(true)
	po.SetKeepAlive(o.KeepAlive)
	po.SetPingTimeout(o.ConnectTimeout)
	po.SetConnectTimeout(o.ConnectTimeout)
	po.SetWriteTimeout(o.ConnectTimeout)
	po.SetAutoReconnect(true)
	po.SetConnectRetry(false) // the first connection is retried by connectLoop
	po.SetConnectRetryInterval(o.MinBackoff)
	po.SetMaxReconnectInterval(o.MaxBackoff)
	po.SetResumeSubs(true)
	// Resend stored QoS 1/2 messages in their original order after a reconnect.
	po.SetStore(newCopyingStore())
	if isTLSScheme(u.Scheme) {
		tc, err := o.TLS.Config(u.Hostname())
		if err != nil {
			return nil, err
		}
		po.SetTLSConfig(tc)
	}
	if o.StatusTopic != "-" {
		// Last Will: the broker publishes "offline" if we vanish [MQTT-3.1.2-8].
		po.SetWill(o.StatusTopic, "offline", 1, true)
	}
	po.SetOnConnectHandler(r.onConnect)
	po.SetConnectionLostHandler(r.onConnectionLost)
	po.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
		r.log.Debug("mqtt reconnecting")
	})
	po.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		// A message for a subscription we no longer hold: acknowledge it
		// so the broker does not keep redelivering it.
		r.log.Debug("mqtt message without subscription", "topic", m.Topic())
		m.Ack()
	})
	return po, nil
}

// Start connects to the broker. Subscriptions and publishes made before
// Start wait for the connection like those made while disconnected.
// A broker that refuses the connection
// returns an error wrapping ErrBrokerRefused and naming the broker. A
// broker that cannot be reached is retried in the background with
// exponential backoff; Start then returns nil and State stays
// StateConnecting until the connection is up.
func (r *Remote) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.started || r.closing {
		r.mu.Unlock()
		return fmt.Errorf("%w: Start called twice or after Close", ErrInvalidOptions)
	}
	r.started = true
	r.mu.Unlock()
	r.setState(StateConnecting, nil)

	r.wg.Add(2)
	go r.dispatch()
	go r.settle()

	tok := r.pc.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		// Start's context bounds the wait, not the connection: keep
		// trying in the background like for an unreachable broker.
		r.log.Warn("mqtt broker not answering yet, still connecting in background", "error", ctx.Err())
		r.wg.Add(1)
		go r.connectLoop(tok)
		return nil
	}
	err := tok.Error()
	switch {
	case err == nil:
		// Paho runs the connect handler on its own goroutine; wait for it
		// so that State is StateConnected when Start returns.
		select {
		case <-r.up:
		case <-ctx.Done():
		}
		return nil
	case isRefusal(err):
		r.mu.Lock()
		r.closing = true
		r.mu.Unlock()
		r.setState(StateClosed, err)
		r.shutdown()
		return fmt.Errorf("%w: %s: %w", ErrBrokerRefused, r.broker, err)
	}
	r.log.Warn("mqtt broker unreachable, retrying in background", "error", err)
	r.wg.Add(1)
	go r.connectLoop(nil)
	return nil
}

// connectLoop retries the first connection with exponential backoff and
// jitter until it succeeds or the client is closed, starting by waiting
// for pending, an attempt already running, if not nil. After the first
// success Paho reconnects by itself.
func (r *Remote) connectLoop(pending paho.Token) {
	defer r.wg.Done()
	delay := r.opts.MinBackoff
	for attempt := 1; ; attempt++ {
		if pending == nil {
			jitter := time.Duration(rand.Int64N(int64(delay)/4 + 1))
			t := time.NewTimer(delay + jitter)
			select {
			case <-r.stop:
				t.Stop()
				return
			case <-t.C:
			}
			pending = r.pc.Connect()
			delay = min(delay*2, r.opts.MaxBackoff)
		}
		select {
		case <-pending.Done():
		case <-r.stop:
			return
		}
		err := pending.Error()
		pending = nil
		if err == nil {
			return
		}
		if isRefusal(err) {
			r.log.Error("mqtt broker refused connection", "attempt", attempt, "error", err)
		} else {
			r.log.Warn("mqtt broker unreachable", "attempt", attempt, "retry_in", delay, "error", err)
		}
		r.emit(Event{State: StateConnecting, Err: err})
	}
}

// isRefusal reports a failure that retrying will not fix: a CONNACK
// refusal with return code 1, 2, 4 or 5 [MQTT-3.2.2.3], or a broker
// certificate that does not verify.
func isRefusal(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &verify) {
		return true
	}
	return errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) ||
		errors.Is(err, packets.ErrorRefusedNotAuthorised) ||
		errors.Is(err, packets.ErrorRefusedIDRejected) ||
		errors.Is(err, packets.ErrorRefusedBadProtocolVersion)
}

func (r *Remote) onConnect(c paho.Client) {
	if r.ever.Swap(true) {
		r.cnt.reconnects.Add(1)
	}
	r.log.Info("mqtt connected")
	r.mu.Lock()
	subs := make(map[string]remoteSub, len(r.subs))
	for f, s := range r.subs {
		subs[f] = s
	}
	var unsubs []string
	for f := range r.unsubs {
		unsubs = append(unsubs, f)
	}
	clear(r.unsubs)
	r.mu.Unlock()

	// Resubscribe: the broker may have lost the session (restart without
	// persistence). Routes were registered by Subscribe, so one callback
	// per filter keeps working; SubscribeMultiple needs one handler, so
	// subscribe filter by filter.
	for f, s := range subs {
		tok := c.Subscribe(f, s.qos, s.cb)
		go r.checkSubscribe(tok, f) // ends with the token or at Close
	}
	if len(unsubs) > 0 {
		c.Unsubscribe(unsubs...)
	}
	if r.opts.StatusTopic != "-" {
		c.Publish(r.opts.StatusTopic, 1, true, "online")
	}
	r.setState(StateConnected, nil)
	r.upOnce.Do(func() { close(r.up) })
	r.signal()
}

func (r *Remote) checkSubscribe(tok paho.Token, filter string) {
	select {
	case <-tok.Done():
	case <-r.stop:
		return
	}
	if err := subscribeResult(tok, filter); err != nil {
		r.log.Error("mqtt resubscribe failed", "filter", filter, "error", err)
	}
}

func (r *Remote) onConnectionLost(c paho.Client, err error) {
	if c.IsConnectionOpen() {
		return // already reconnected
	}
	r.log.Warn("mqtt connection lost, buffering publishes", "error", err)
	r.setState(StateDisconnected, err)
}

func (r *Remote) setState(s State, err error) {
	if State(r.state.Load()) == StateClosed && s != StateClosed {
		return
	}
	r.state.Store(int32(s))
	r.emit(Event{State: s, Err: err})
}

func (r *Remote) emit(e Event) {
	if r.opts.OnEvent != nil {
		e.Time = time.Now()
		r.opts.OnEvent(e)
	}
}

// signal wakes the dispatcher without blocking.
func (r *Remote) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// State reports the connection state.
func (r *Remote) State() State { return State(r.state.Load()) }

// Stats returns a snapshot of the counters.
func (r *Remote) Stats() Stats {
	s := r.cnt.snapshot()
	r.mu.Lock()
	s.BufferDepth = r.buf.Len()
	r.mu.Unlock()
	s.Connected = r.State() == StateConnected
	return s
}

// Publish hands m to the broker; see [Client.Publish].
func (r *Remote) Publish(ctx context.Context, m Message) error {
	if err := validateMessage(m, r.opts.MaxPayload, r.opts.AllowEmptyLevels); err != nil {
		r.cnt.invalid.Add(1)
		return err
	}
	if err := ctx.Err(); err != nil {
		return err // not accepted
	}
	p := newPending(m)
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return ErrClosed
	}
	evicted, err := r.buf.Push(p)
	if err == nil {
		r.outstanding++
		if r.State() != StateConnected {
			r.cnt.buffered.Add(1)
		}
	}
	if evicted != nil {
		r.outstanding--
	}
	r.mu.Unlock()

	if evicted != nil {
		r.cnt.droppedQoS0.Add(1)
		evicted.done <- ErrDropped
		r.log.Debug("mqtt offline buffer full, dropped oldest QoS 0 message", "topic", evicted.msg.Topic)
	}
	switch {
	case errors.Is(err, ErrBufferFull):
		r.cnt.refused.Add(1)
		return fmt.Errorf("%w (%d messages)", ErrBufferFull, r.opts.BufferSize)
	case errors.Is(err, ErrDropped):
		r.cnt.droppedQoS0.Add(1)
		return err
	}
	r.signal()
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrPending, ctx.Err())
	}
}

// dispatch hands buffered messages to Paho in order while connected.
func (r *Remote) dispatch() {
	defer r.wg.Done()
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
		p := r.buf.Pop()
		r.mu.Unlock()

		tok := r.pc.Publish(p.msg.Topic, p.msg.QoS, p.msg.Retain, p.msg.Payload)
		if done(tok) && errors.Is(tok.Error(), paho.ErrNotConnected) {
			// Lost the connection between the check and the call: put it
			// back in front to keep order, and wait for the reconnect.
			r.mu.Lock()
			ok := r.buf.PushFront(p)
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
	r.cnt.requeued.Add(1)
	r.log.Debug("mqtt publish interrupted, kept for resend", "topic", f.p.msg.Topic, "error", err)
	f.p.done <- fmt.Errorf("%w: resent after reconnect: %w", ErrPending, err)
	r.mu.Lock()
	r.outstanding--
	r.mu.Unlock()
}

func (r *Remote) settleOne(p *pending, err error) {
	if err == nil {
		r.cnt.published.Add(1)
	} else {
		r.cnt.failed.Add(1)
		r.log.Debug("mqtt publish failed", "topic", p.msg.Topic, "error", err)
		if !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("mqtt: publish to %s: %w", r.broker, err)
		}
	}
	p.done <- err
	r.mu.Lock()
	r.outstanding--
	r.mu.Unlock()
}

// Subscribe registers h for filter; see [Client.Subscribe].
func (r *Remote) Subscribe(ctx context.Context, filter string, qos byte, h Handler) error {
	if err := ValidateFilter(filter); err != nil {
		return err
	}
	if err := ValidateQoS(qos); err != nil {
		return err
	}
	if h == nil {
		return fmt.Errorf("%w: nil handler", ErrInvalidOptions)
	}
	cb := r.handler(filter, h)
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return ErrClosed
	}
	r.subs[filter] = remoteSub{qos: qos, cb: cb}
	delete(r.unsubs, filter)
	r.mu.Unlock()
	// A route lets redeliveries that arrive right after connecting reach
	// the handler before the SUBSCRIBE is answered.
	r.pc.AddRoute(filter, cb)
	if !r.pc.IsConnectionOpen() {
		return nil // sent by onConnect
	}
	tok := r.pc.Subscribe(filter, qos, cb)
	if err := waitToken(ctx, tok); err != nil {
		if errors.Is(err, paho.ErrNotConnected) {
			return nil // lost the connection meanwhile: sent by onConnect
		}
		return fmt.Errorf("mqtt: subscribe %q on %s: %w", filter, r.broker, err)
	}
	if err := subscribeResult(tok, filter); err != nil {
		// Forget it, and drop Paho's route, which an UNSUBSCRIBE removes:
		// otherwise the handler would still see messages of other
		// subscriptions that match this filter.
		r.mu.Lock()
		delete(r.subs, filter)
		r.mu.Unlock()
		r.pc.Unsubscribe(filter)
		return err
	}
	return nil
}

func subscribeResult(tok paho.Token, filter string) error {
	if err := tok.Error(); err != nil {
		return err
	}
	st, ok := tok.(*paho.SubscribeToken)
	if !ok {
		return nil
	}
	if code, ok := st.Result()[filter]; ok && code == 0x80 { // [MQTT-3.9.3] failure return code
		return fmt.Errorf("%w: %q", ErrSubscribeRefused, filter)
	}
	return nil
}

func (r *Remote) handler(filter string, h Handler) paho.MessageHandler {
	return func(_ paho.Client, m paho.Message) {
		r.cnt.received.Add(1)
		h.ServeMQTT(&Delivery{
			Message: Message{
				Topic:   m.Topic(),
				Payload: m.Payload(),
				QoS:     m.Qos(),
				Retain:  m.Retained(),
			},
			Duplicate: m.Duplicate(),
			Filter:    filter,
			Received:  time.Now(),
			ack:       m.Ack,
		})
	}
}

// Unsubscribe removes the subscription for filter. While disconnected the
// UNSUBSCRIBE is sent on the next connect.
func (r *Remote) Unsubscribe(ctx context.Context, filter string) error {
	if err := ValidateFilter(filter); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.subs, filter)
	connected := r.pc.IsConnectionOpen()
	if !connected {
		r.unsubs[filter] = true
	}
	r.mu.Unlock()
	if !connected {
		return nil
	}
	if err := waitToken(ctx, r.pc.Unsubscribe(filter)); err != nil {
		return fmt.Errorf("mqtt: unsubscribe %q on %s: %w", filter, r.broker, err)
	}
	return nil
}

func waitToken(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting publishes, waits until buffered and in-flight
// messages are delivered or ctx ends, publishes "offline" to the status
// topic and disconnects. Messages still undelivered are settled with
// ErrClosed, counted as failed and logged.
func (r *Remote) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return nil
	}
	r.closing = true
	started := r.started
	r.mu.Unlock()
	if !started {
		r.setState(StateClosed, nil)
		return nil
	}

	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for r.hasOutstanding() {
		select {
		case <-ctx.Done():
			break wait
		case <-tick.C:
		}
	}
	if r.pc.IsConnectionOpen() && r.opts.StatusTopic != "-" {
		_ = waitToken(ctx, r.pc.Publish(r.opts.StatusTopic, 1, true, "offline"))
	}
	r.setState(StateClosed, nil)
	r.shutdown()

	r.mu.Lock()
	var lost []*pending
	for p := r.buf.Pop(); p != nil; p = r.buf.Pop() {
		lost = append(lost, p)
	}
	r.mu.Unlock()
	for _, p := range lost {
		r.settleOne(p, ErrClosed)
	}
	if len(lost) > 0 {
		r.log.Warn("mqtt closed with undelivered messages", "count", len(lost))
	}
	return nil
}

// hasOutstanding reports whether accepted messages are still unsettled.
func (r *Remote) hasOutstanding() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.outstanding > 0
}

// shutdown disconnects Paho and stops the goroutines.
func (r *Remote) shutdown() {
	r.stopOnce.Do(func() {
		close(r.stop)
		r.pc.Disconnect(250)
		r.wg.Wait()
	})
}
