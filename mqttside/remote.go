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
	ever   atomic.Bool   // connected at least once
	epoch  atomic.Uint64 // connections so far
	store  *copyingStore

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
	cb  paho.MessageHandler // Paho route for the filter
	h   Handler
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
		store:    newCopyingStore(),
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
	// Subscriptions are made again by onConnect after every connect; Paho
	// need not store and resend them.
	po.SetResumeSubs(false)
	po.SetStore(r.store)
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
		// Called synchronously before each reconnect attempt.
		r.store.expectResume()
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

	r.store.expectResume()
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
	r.emit(Event{State: StateConnecting, Err: err})
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
			r.store.expectResume()
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
	// Let Paho's session resume take its inventory first (see
	// copyingStore.expectResume).
	t := time.NewTimer(r.opts.ConnectTimeout)
	select {
	case <-r.store.resumed():
	case <-t.C:
		r.log.Debug("mqtt session resume not seen, continuing")
	case <-r.stop:
	}
	t.Stop()
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
	r.epoch.Add(1)
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
	err := subscribeResult(tok, filter)
	switch {
	case errors.Is(err, ErrSubscribeRefused):
		// The broker will not have it: forget it as Subscribe does.
		r.log.Error("mqtt subscription refused by broker, dropped", "filter", filter)
		r.mu.Lock()
		delete(r.subs, filter)
		r.mu.Unlock()
		r.pc.Unsubscribe(filter)
	case err != nil:
		// Lost the connection again: the next onConnect retries.
		r.log.Warn("mqtt subscribe failed", "filter", filter, "error", err)
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
