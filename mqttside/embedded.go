package mqttside

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// EmbeddedOptions mirrors [mqtt.embedded] and configures [Embedded].
type EmbeddedOptions struct {
	// Listen is the TCP address for external MQTT clients; "" disables it.
	Listen string
	// WebSocket is the address for MQTT over WebSocket; "" disables it.
	WebSocket string
	// AuthFile is the users and ACL file (see [ACL]); "" allows anonymous
	// clients from loopback addresses only.
	AuthFile string
	// PersistenceDir, when set, keeps sessions, subscriptions, retained and
	// in-flight messages in a bolt database in this directory.
	PersistenceDir string
	// MaxPayload bounds payloads published by the bridge and, through the
	// broker's maximum packet size, by external clients.
	MaxPayload int
	// AllowEmptyLevels permits the bridge to publish to topics with empty levels.
	AllowEmptyLevels bool
	// SysInterval is the $SYS topic refresh interval.
	SysInterval time.Duration

	Logger  *slog.Logger
	OnEvent EventFunc
}

// SetDefaults fills zero fields. Listen has no default here: the config
// layer supplies ":1883" (DefaultEmbeddedListen).
func (o *EmbeddedOptions) SetDefaults() {
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.SysInterval == 0 {
		o.SysInterval = DefaultSysInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports unusable options.
func (o *EmbeddedOptions) Validate() error {
	switch {
	case o.MaxPayload < 1 || o.MaxPayload > 268435455-2-MaxTopicLength:
		return fmt.Errorf("%w: max payload %d out of range", ErrInvalidOptions, o.MaxPayload)
	case o.SysInterval < time.Second:
		return fmt.Errorf("%w: $SYS interval %v below 1s", ErrInvalidOptions, o.SysInterval)
	}
	return nil
}

// Embedded is a [Client] backed by a mochi-mqtt broker in this process. The
// bridge publishes and subscribes through mochi's inline client, with no
// socket in between; external clients use the TCP and WebSocket listeners.
type Embedded struct {
	opts  EmbeddedOptions
	log   *slog.Logger
	acl   atomic.Pointer[ACL]
	srv   *mqtt.Server
	cnt   counters
	state atomic.Int32

	inline *mqtt.Client
	tcp    *listeners.TCP
	ws     *wsListener

	mu     sync.Mutex
	subs   map[string]*inlineSub // by filter
	nextID int

	// lastSent and stalled track the broker's writers (see yieldToWriters).
	lastSent atomic.Int64
	stalled  atomic.Int32
}

var _ Client = (*Embedded)(nil)

// NewEmbedded checks opts, loads the auth file and prepares the broker;
// Start opens the listeners.
func NewEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	opts.SetDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	acl := DefaultACL()
	if opts.AuthFile != "" {
		var err error
		if acl, err = LoadACL(opts.AuthFile); err != nil {
			return nil, err
		}
	}
	e := &Embedded{
		opts: opts,
		log:  opts.Logger.With("broker", "embedded"),
		subs: make(map[string]*inlineSub),
	}
	e.acl.Store(acl)
	if acl.Anonymous == nil && len(acl.Users) == 0 {
		e.log.Warn("mqtt auth file lets no client in: it has no [[user]] and no [anonymous] table", "file", opts.AuthFile)
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(opts.MaxPayload + MaxTopicLength + 1024) // fixed header, topic, properties
	e.srv = mqtt.New(&mqtt.Options{
		InlineClient:           true,
		Capabilities:           caps,
		Logger:                 newPacketFilter(opts.Logger).With("component", "mochi"),
		SysTopicResendInterval: int64(opts.SysInterval / time.Second),
	})
	return e, nil
}

// ReloadAuth reads the auth file again. On an error the users and ACLs
// loaded before stay. Otherwise new connections and every later publish,
// subscription and delivery follow the new file, and a connected client
// it no longer lets in (its user removed, its password changed, or its
// network no longer allowed) is disconnected.
func (e *Embedded) ReloadAuth() error {
	if e.opts.AuthFile == "" {
		return nil
	}
	acl, err := LoadACL(e.opts.AuthFile)
	if err != nil {
		return err
	}
	old := e.acl.Swap(acl)
	dropped := 0
	for _, cl := range e.srv.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		user := string(cl.Properties.Username)
		if !acl.still(user, old.hashOf(user), cl.Net.Remote) {
			e.log.Info("mqtt client disconnected: the auth file no longer lets it in", "client_id", cl.ID, "username", user)
			cl.Stop(packets.ErrNotAuthorized)
			dropped++
		}
	}
	e.log.Info("mqtt auth file reloaded", "users", len(acl.Users), "disconnected", dropped)
	return nil
}

// Start adds the hooks and listeners and starts the broker.
func (e *Embedded) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !e.state.CompareAndSwap(int32(StateIdle), int32(StateConnecting)) {
		return fmt.Errorf("%w: Start called twice or after Close", ErrInvalidOptions)
	}
	if err := e.start(); err != nil {
		_ = e.srv.Close()
		e.setState(StateClosed, err)
		return fmt.Errorf("mqtt: embedded broker: %w", err)
	}
	cl, ok := e.srv.Clients.Get(mqtt.InlineClientId)
	if !ok {
		_ = e.srv.Close()
		return fmt.Errorf("mqtt: embedded broker: %w", mqtt.ErrInlineClientNotEnabled)
	}
	e.inline = cl
	e.sendStored()
	e.log.Info("mqtt embedded broker started", "tcp", e.Addr(), "websocket", e.WebSocketAddr(),
		"auth_file", e.opts.AuthFile, "persistence", e.opts.PersistenceDir)
	e.setState(StateConnected, nil)
	return nil
}

func (e *Embedded) start() error {
	if err := e.srv.AddHook(&dropHook{log: e.log, drops: &e.cnt.subDrops}, nil); err != nil {
		return err
	}
	hook := &authHook{acl: &e.acl, log: e.log, maxPayload: e.opts.MaxPayload, invalid: &e.cnt.invalid}
	if err := e.srv.AddHook(hook, nil); err != nil {
		return err
	}
	if e.opts.PersistenceDir != "" {
		if err := addPersistence(e.srv, e.opts.PersistenceDir); err != nil {
			return err
		}
	}
	if e.opts.Listen != "" {
		e.tcp = listeners.NewTCP(listeners.Config{Type: listeners.TypeTCP, ID: "tcp", Address: e.opts.Listen})
		if err := e.srv.AddListener(closingListener{Listener: e.tcp, srv: e.srv}); err != nil {
			return fmt.Errorf("listen %s: %w", e.opts.Listen, err)
		}
	}
	if e.opts.WebSocket != "" {
		e.ws = newWSListener("ws", e.opts.WebSocket)
		if err := e.srv.AddListener(closingListener{Listener: e.ws, srv: e.srv}); err != nil {
			return fmt.Errorf("websocket listen %s: %w", e.opts.WebSocket, err)
		}
	}
	return e.srv.Serve()
}

// Addr returns the bound TCP address, or "" without a TCP listener.
func (e *Embedded) Addr() string {
	if e.tcp == nil {
		return ""
	}
	return e.tcp.Address()
}

// WebSocketAddr returns the bound WebSocket address, or "".
func (e *Embedded) WebSocketAddr() string {
	if e.ws == nil {
		return ""
	}
	return e.ws.Address()
}

func (e *Embedded) setState(s State, err error) {
	e.state.Store(int32(s))
	if e.opts.OnEvent != nil {
		e.opts.OnEvent(Event{State: s, Err: err, Time: time.Now()})
	}
}

// State reports StateConnected while the broker runs.
func (e *Embedded) State() State { return State(e.state.Load()) }

// Stats returns a snapshot of the counters. The embedded broker has no
// offline buffer; BufferDepth is always 0.
func (e *Embedded) Stats() Stats {
	s := e.cnt.snapshot()
	s.Connected = e.State() == StateConnected
	return s
}

// Publish injects m into the broker through the inline client. When it
// returns nil the broker has routed the message to every subscriber's
// queue (and stored it if retained), whatever the QoS.
func (e *Embedded) Publish(ctx context.Context, m Message) error {
	if err := validateMessage(m, e.opts.MaxPayload, e.opts.AllowEmptyLevels); err != nil {
		e.cnt.invalid.Add(1)
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	switch e.State() {
	case StateConnected:
	case StateClosed:
		return ErrClosed
	default:
		return ErrNotStarted
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:   m.Topic,
		Payload:     m.Payload,
		// The inline client never sees acknowledgements, but QoS > 0
		// packets need a non-zero packet identifier [MQTT-2.3.1-1].
		PacketID: uint16(m.QoS),
		Properties: packets.Properties{
			ResponseTopic:   m.ResponseTopic,
			CorrelationData: m.CorrelationData,
			ContentType:     m.ContentType,
			// Whole seconds on the wire; a fraction rounds up so a
			// message never expires early.
			MessageExpiryInterval: expirySeconds(m.MessageExpiry),
		},
	}
	if err := e.srv.InjectPacket(e.inline, pk); err != nil {
		e.cnt.failed.Add(1)
		return fmt.Errorf("mqtt: embedded publish %s: %w", quoteShort(m.Topic), err)
	}
	e.cnt.published.Add(1)
	e.yieldToWriters()
	return nil
}

// yieldAfter is how many inline publishes may pass while the broker sends
// no message to its network clients before the publisher yields the CPU;
// 0 never yields. A variable for the benchmark that compares both.
var yieldAfter int32 = 8

// yieldToWriters lets mochi's per-client write goroutines run when they
// fall behind. The bridge publishes on the goroutines that read CoAP
// datagrams. With one CPU for the Go scheduler (GOMAXPROCS 1, as in a
// one-CPU container) those goroutines hand the CPU to each other and a
// network client's write goroutine, runnable, can wait tens of
// milliseconds while its queue grows: the messages reach subscribers late
// (8–14 ms at the median under load), and a QoS 1 subscriber's
// acknowledgements are read late. When yieldAfter publishes pass and the
// broker has sent no message meanwhile, while network clients are
// connected, the publisher yields (runtime.Gosched), which puts it behind
// the waiting writers. With more CPUs the writers run in parallel, their
// sent count moves and the publisher never yields. It is a heuristic read
// of counters shared by concurrent publishers; a missed or an extra yield
// costs nothing but a little latency or CPU.
func (e *Embedded) yieldToWriters() {
	if yieldAfter <= 0 {
		return
	}
	sent := atomic.LoadInt64(&e.srv.Info.MessagesSent)
	if e.lastSent.Swap(sent) != sent {
		e.stalled.Store(0)
		return
	}
	if e.stalled.Add(1) < yieldAfter {
		return
	}
	e.stalled.Store(0)
	if atomic.LoadInt64(&e.srv.Info.ClientsConnected) > 0 {
		runtime.Gosched()
	}
}

// PublishOrWithdraw is Publish: the embedded broker takes a message at
// once or refuses it, so there is nothing to withdraw.
func (e *Embedded) PublishOrWithdraw(ctx context.Context, m Message) error {
	return e.Publish(ctx, m)
}

// Subscribe registers h as an inline subscription; it may be called before
// Start. Handlers run on the publishing client's goroutine and must not
// block. Deliveries need no
// acknowledgement; Ack is a no-op.
func (e *Embedded) Subscribe(_ context.Context, filter string, qos byte, h Handler) error {
	if err := ValidateFilter(filter); err != nil {
		return err
	}
	if err := ValidateQoS(qos); err != nil {
		return err
	}
	if h == nil {
		return fmt.Errorf("%w: nil handler", ErrInvalidOptions)
	}
	if e.State() == StateClosed {
		return ErrClosed
	}
	sub := &inlineSub{early: e.State() != StateConnected}
	e.mu.Lock()
	old, had := e.subs[filter]
	e.nextID++
	sub.id = e.nextID
	e.subs[filter] = sub
	e.mu.Unlock()
	if had {
		_ = e.srv.Unsubscribe(filter, old.id)
	}
	sub.deliver = func(pk packets.Packet, retain bool) {
		e.cnt.received.Add(1)
		h.ServeMQTT(&Delivery{
			Message: Message{
				Topic:           pk.TopicName,
				Payload:         pk.Payload,
				QoS:             min(pk.FixedHeader.Qos, qos),
				Retain:          retain,
				ResponseTopic:   pk.Properties.ResponseTopic,
				CorrelationData: pk.Properties.CorrelationData,
				ContentType:     pk.Properties.ContentType,
				MessageExpiry:   time.Duration(pk.Properties.MessageExpiryInterval) * time.Second,
			},
			Duplicate: pk.FixedHeader.Dup,
			Filter:    filter,
			Received:  time.Now(),
		})
	}
	// stored is set while mochi sends this new subscription the retained
	// messages it stores, which it does inside srv.Subscribe: only those
	// are delivered with Retain [MQTT-3.3.1-9]. A live publish reaches
	// the inline handler with its publisher's flag, which a subscriber
	// must not see. One published while the subscription is being made
	// may be taken for a stored one, as a broker may deliver it either way.
	var stored atomic.Bool
	fn := func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		sub.deliver(pk, pk.FixedHeader.Retain && stored.Load())
	}
	stored.Store(true)
	err := e.srv.Subscribe(filter, sub.id, fn)
	stored.Store(false)
	if err != nil {
		return fmt.Errorf("mqtt: embedded subscribe %q: %w", filter, err)
	}
	return nil
}

// inlineSub is one inline subscription of the bridge.
type inlineSub struct {
	id int
	// early is set on a subscription made before the broker started: it
	// has not been sent the retained messages of the store (see
	// sendStored).
	early bool
	// deliver hands a message to the subscription's handler; retain is
	// the Retain flag it is delivered with.
	deliver func(pk packets.Packet, retain bool)
}

// sendStored sends each subscription made before Start the retained
// messages matching it that the broker read from its store
// (persistence_dir) when it started: mochi sends a subscription the
// retained messages it holds when the subscription is made, and it held
// none yet. They are delivered with Retain, as the stored messages a new
// subscription is sent.
func (e *Embedded) sendStored() {
	e.mu.Lock()
	early := make(map[string]*inlineSub, len(e.subs))
	for filter, sub := range e.subs {
		if sub.early {
			early[filter] = sub
			sub.early = false
		}
	}
	e.mu.Unlock()
	for filter, sub := range early {
		for _, pk := range e.srv.Topics.Messages(filter) {
			sub.deliver(pk, true)
		}
	}
}

// Unsubscribe removes the inline subscription for filter.
func (e *Embedded) Unsubscribe(_ context.Context, filter string) error {
	if err := ValidateFilter(filter); err != nil {
		return err
	}
	e.mu.Lock()
	sub, ok := e.subs[filter]
	delete(e.subs, filter)
	e.mu.Unlock()
	if !ok {
		return nil
	}
	return e.srv.Unsubscribe(filter, sub.id)
}

// Close stops the listeners, disconnects clients and closes the store.
// It is idempotent; ctx is unused because mochi stops synchronously.
func (e *Embedded) Close(context.Context) error {
	prev := State(e.state.Swap(int32(StateClosed)))
	if prev == StateClosed {
		return nil
	}
	if e.opts.OnEvent != nil {
		e.opts.OnEvent(Event{State: StateClosed, Time: time.Now()})
	}
	if prev == StateIdle {
		return nil
	}
	return e.srv.Close()
}

// expirySeconds is d as an MQTT 5 Message Expiry Interval: whole seconds,
// rounded up, 0 for none.
func expirySeconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	s := (d + time.Second - 1) / time.Second
	return uint32(min(s, math.MaxUint32))
}
