package mqttside

import (
	"context"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
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
	// live holds every accepted message not yet settled, wherever it is
	// (buffer, dispatcher, Paho): Close settles what is left of it, and a
	// message is settled once only.
	live    map[*pending]struct{}
	closing bool
	started bool

	up       chan struct{} // closed by the first onConnect
	upOnce   sync.Once
	wake     chan struct{} // cap 1: buffer or state changed
	lost     chan struct{} // cap 1: the connection went away; run reconnects
	inflight chan inflightPub
	stop     chan struct{}
	stopOnce sync.Once
	// connMu orders connection attempts with the close of stop, so that
	// none begins after shutdown's Disconnect.
	connMu sync.Mutex
	wg     sync.WaitGroup
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
		live:     map[*pending]struct{}{},
		subs:     make(map[string]remoteSub),
		unsubs:   make(map[string]bool),
		up:       make(chan struct{}),
		wake:     make(chan struct{}, 1),
		lost:     make(chan struct{}, 1),
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
	// Connecting again is run's job, with its own backoff: Paho's keeps
	// growing across short outages and sleeps where Close cannot stop it.
	po.SetAutoReconnect(false)
	po.SetConnectRetry(false)
	// Subscriptions are made again by onConnect after every connect; Paho
	// need not store and resend them.
	po.SetResumeSubs(false)
	po.SetStore(r.store)
	if IsTLSScheme(u.Scheme) {
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
	po.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		// A message for a subscription we no longer hold: acknowledge it
		// so the broker does not keep redelivering it.
		r.log.Debug("mqtt message without subscription", "topic", m.Topic())
		m.Ack()
	})
	return po, nil
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
// messages are delivered, publishes "offline" to the status topic and
// disconnects. It returns by ctx's deadline even when the broker is dead:
// the delivery wait ends early enough to leave the last part of the time
// (up to closeReserve) for the goodbye. Messages still undelivered are
// settled with ErrClosed, counted as failed and logged.
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

	flushCtx, cancel := withReserve(ctx, closeReserve)
	r.flush(flushCtx)
	cancel()
	if r.pc.IsConnectionOpen() && r.opts.StatusTopic != "-" {
		byeCtx, cancel := withReserve(ctx, disconnectQuiesce)
		_ = waitToken(byeCtx, r.pc.Publish(r.opts.StatusTopic, 1, true, "offline"))
		cancel()
	}
	r.setState(StateClosed, nil)
	r.shutdown(ctx)

	// Whatever is not settled now never will be by the goroutines, which
	// may still be stopping: the buffer, and a message a goroutine held at
	// the deadline (a late settlement of it is a no-op).
	r.mu.Lock()
	for r.buf.Len() > 0 {
		r.buf.Pop()
	}
	lost := make([]*pending, 0, len(r.live))
	for p := range r.live {
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

const (
	// closeReserve is the most of Close's time kept for the status
	// message and the DISCONNECT.
	closeReserve = 500 * time.Millisecond
	// disconnectQuiesce is the most Close waits for the DISCONNECT to go
	// out.
	disconnectQuiesce = 250 * time.Millisecond
)

// withReserve returns a context that ends reserve (at most a quarter of
// the time left) before ctx's deadline, so that work after it still fits.
func withReserve(ctx context.Context, reserve time.Duration) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	reserve = min(reserve, time.Until(deadline)/4)
	return context.WithDeadline(ctx, deadline.Add(-reserve))
}

// flush waits until every accepted message is settled or ctx ends.
func (r *Remote) flush(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for r.hasOutstanding() {
		select {
		case <-ctx.Done():
			r.log.Debug("mqtt close: stopped waiting for delivery", "err", ctx.Err())
			return
		case <-tick.C:
		}
	}
}

// hasOutstanding reports whether accepted messages are still unsettled.
func (r *Remote) hasOutstanding() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.outstanding > 0
}

// shutdown disconnects Paho and stops the goroutines, waiting for them
// until ctx ends. Each of them returns once the Paho call it may be in
// returns, which the DISCONNECT makes prompt; Close does not wait longer
// than its caller allows.
func (r *Remote) shutdown(ctx context.Context) {
	r.stopOnce.Do(func() {
		r.connMu.Lock()
		close(r.stop)
		r.connMu.Unlock()
		quiesce := disconnectQuiesce
		if deadline, ok := ctx.Deadline(); ok {
			quiesce = max(min(quiesce, time.Until(deadline)), 0)
		}
		r.pc.Disconnect(uint(quiesce.Milliseconds()))
		stopped := make(chan struct{})
		go func() { r.wg.Wait(); close(stopped) }() // ends with the goroutines
		select {
		case <-stopped:
		case <-ctx.Done():
			r.log.Warn("mqtt close: workers still stopping at the deadline", "err", ctx.Err())
		}
	})
}
