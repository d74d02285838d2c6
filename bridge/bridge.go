// Package bridge wires the CoAP side, the MQTT side and the rules together
// and owns their lifecycle: start, reload, health, metrics and shutdown.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/cache"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/mqttside"

	"github.com/coap-mqtt/bridge/rules"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// ShutdownGrace bounds how long a graceful shutdown may take.
const ShutdownGrace = 5 * time.Second

// Shares of ShutdownGrace.
const (
	// shutdownMargin is kept back from ShutdownGrace for the process to
	// exit after Run returns.
	shutdownMargin = 500 * time.Millisecond
	// drainRequests is how long CoAP requests in progress (a device's push
	// waiting for a broker that is gone) may run on at shutdown; after it
	// their context ends and what they had not published is withdrawn.
	drainRequests = time.Second
)

// Options are the bridge's tunables beyond the config file. Zero values take
// the defaults noted on each field.
type Options struct {
	// PublishTimeout bounds waiting for the broker to acknowledge a device's
	// QoS 1/2 push; then the message is withdrawn from the offline buffer
	// and the device is told 5.03 to retry (5s).
	PublishTimeout time.Duration
	// HandoverTimeout bounds handing any other message to the MQTT client
	// or its offline buffer (1s).
	HandoverTimeout time.Duration
	// RetryMaxAge is the Max-Age (seconds) sent with 5.03 when the broker
	// cannot take a device's message, telling it when to retry (5).
	RetryMaxAge uint32
	// ResourceMaxAge is the Max-Age (seconds) of resource rule responses (60).
	ResourceMaxAge uint32
	// RequestTimeout bounds a poll or discovery request to a device (10s).
	RequestTimeout time.Duration
	// CommandWorkers run MQTT -> CoAP commands concurrently (32).
	CommandWorkers int
	// CommandBacklog bounds commands waiting for a worker (1024).
	CommandBacklog int
	// CommandQueue bounds commands held per sleeping or offline device
	// (devices.queue_size, 100).
	CommandQueue int
	// CommandQueueTTL expires commands held for a sleeping or offline
	// device (devices.queue_ttl, 10m).
	CommandQueueTTL time.Duration
	// Awake is how long a learned device is reachable after each of its
	// requests to the bridge (devices.awake, 5s).
	Awake time.Duration
	// ProbeMin and ProbeMax bound the backoff between CoAP pings to a
	// device marked offline: the first is sent within ProbeMin after it
	// stopped answering, then the interval doubles up to ProbeMax (2s, 1m).
	ProbeMin, ProbeMax time.Duration
	// ObserveFallbackInterval is the poll interval for resources that
	// cannot be observed (30s).
	ObserveFallbackInterval time.Duration
	// FallbackRounds is how many polls of a resource that is not
	// observable are made before observing is tried again (10).
	FallbackRounds int
	// ReobserveMin and ReobserveMax bound the backoff before observing a
	// device again after an observation ended or failed (1s, 5m).
	ReobserveMin, ReobserveMax time.Duration
	// MaxEstablishing bounds the observations being registered at once
	// (DefaultMaxEstablishing); the others wait their turn without a
	// goroutine.
	MaxEstablishing int
	// DiscoveryRefresh is how often discover queries are run again (5m).
	DiscoveryRefresh time.Duration
	// ResourceCacheSize bounds the topics whose latest message resource
	// rules keep (10000).
	ResourceCacheSize int
	// CoAP tunes the message layer of the bridge's CoAP server and clients.
	CoAP coapside.EndpointOptions
	// MQTTKeepAlive is the keepalive of the connection to a remote
	// broker (30s): a bridge that vanished without closing its connection
	// is declared gone by the broker, and its Last Will published, within
	// one and a half times it.
	MQTTKeepAlive time.Duration
	// ReloadSettle is how long the rule files must stay unchanged before a
	// reload reads them, and between the two reads that must agree (250ms).
	ReloadSettle time.Duration

	noFileWatch bool // reload only on TriggerReload (tests)
}

// fromDevices takes the queue mode keys set in the devices section.
func (o *Options) fromDevices(d DevicesConfig) {
	if d.Awake > 0 {
		o.Awake = d.Awake
	}
	if d.QueueSize > 0 {
		o.CommandQueue = d.QueueSize
	}
	if d.QueueTTL > 0 {
		o.CommandQueueTTL = d.QueueTTL
	}
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.PublishTimeout, 5*time.Second)
	def(&o.HandoverTimeout, time.Second)
	def(&o.RequestTimeout, 10*time.Second)
	def(&o.CommandQueueTTL, DefaultQueueTTL)
	def(&o.Awake, DefaultAwake)
	def(&o.ProbeMin, 2*time.Second)
	def(&o.ProbeMax, time.Minute)
	def(&o.ObserveFallbackInterval, 30*time.Second)
	def(&o.ReobserveMin, time.Second)
	def(&o.ReobserveMax, 5*time.Minute)
	def(&o.DiscoveryRefresh, 5*time.Minute)
	def(&o.ReloadSettle, 250*time.Millisecond)
	defInt(&o.FallbackRounds, 10)
	defInt(&o.MaxEstablishing, DefaultMaxEstablishing)
	defInt(&o.CommandWorkers, 32)
	defInt(&o.CommandBacklog, 1024)
	defInt(&o.CommandQueue, DefaultQueueSize)
	defInt(&o.ResourceCacheSize, 10000)
	if o.RetryMaxAge == 0 {
		o.RetryMaxAge = 5
	}
	if o.ResourceMaxAge == 0 {
		o.ResourceMaxAge = 60
	}
}

// Bridge is one running instance. Create it with New and start it with
// Run. Its parts each get only what they use, and Run supervises them:
//
//   - ingress: the CoAP server; device pushes are published through outs;
//   - resources: resource rules, fed by MQTT and read over CoAP;
//   - commands: MQTT messages sent to devices, with per-device queues;
//   - watches: observations, polls and discovery of device resources;
//   - the HTTP side (/metrics, /healthz, /readyz) and the rule reloader.
//
// Every exported method may be called before, during and after Run.
type Bridge struct {
	cfg     Config
	opts    Options
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	health  *health

	set         atomic.Pointer[rules.Set]
	filterKinds atomic.Pointer[map[string]kindMask] // MQTT filter -> rule kinds that need it
	subs        *subscribed                         // the filters subscribed to
	reloadMu    sync.Mutex                          // serialises reloads; guards applied and rejected
	reloadCh    chan struct{}
	applied     *ruleFiles                    // the files the running rules came from
	rejected    *ruleFiles                    // the files of the last reload if it was rejected or refused
	lastReload  atomic.Pointer[ConsoleReload] // the outcome of the latest reload; nil before one

	mqtt      *mqttLink // the MQTT client, made by Run
	devices   *deviceClients
	learned   *learnedDevices
	presence  *presence      // nil without devices.presence_topic
	keeper    *stateKeeper   // state.dir
	restored  []savedCommand // from state.dir, queued again once MQTT is up
	restoreMu sync.Mutex     // guards restored, which a save may read before Run queues them (see snapshot)
	outs      *outputs
	resources *resources
	commands  *commands
	watches   *watcher
	proxy     *proxy
	cluster   *cluster // nil when the bridge runs alone
	coap      *ingress
	http      *httpSide
	liveCheck atomic.Pointer[func() error] // replaces the CoAP listener check in tests

	state atomic.Int32 // stateNew … stateStopped

	mu       sync.Mutex
	psk      *dtls.PSKStore   // the coaps listener's keys, reloaded with the rules
	dtlsConn *dtls.ServerConn // the coaps listener; nil without one
	httpAddr net.Addr
	coapAddr net.Addr
	dtlsAddr net.Addr
}

// A Bridge's states: Run moves it from new through starting, running and
// stopping to stopped.
const (
	stateNew int32 = iota
	stateStarting
	stateRunning
	stateStopping
	stateStopped
)

// New validates cfg, loads its rules and prepares a bridge; nothing listens
// until Run.
func New(cfg Config, logger *slog.Logger) (*Bridge, error) {
	return NewWithOptions(cfg, Options{}, logger)
}

// NewWithOptions is New with tunables.
func NewWithOptions(cfg Config, opts Options, logger *slog.Logger) (*Bridge, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	files := readRuleFiles(cfg)
	set, err := loadRules(cfg, files.rules)
	if err != nil {
		return nil, err
	}
	opts.fromDevices(cfg.Devices)
	opts.setDefaults()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	b := &Bridge{
		cfg:      cfg,
		opts:     opts,
		log:      logger,
		reg:      reg,
		metrics:  newMetrics(reg),
		health:   newHealth(),
		reloadCh: make(chan struct{}, 1),
		applied:  files,
		mqtt:     &mqttLink{},
		subs:     newSubscribed(),
	}
	if cfg.Metrics.PerDevice {
		b.metrics.devices = newDeviceMetrics(reg, cfg.Metrics.PerDeviceMax, logger)
	}
	b.set.Store(set)
	limit := maxPayload(cfg.MQTT)
	logLearn := learnLogger(logger)
	b.presence = newPresence(cfg.Devices, b.mqtt, b.locateDevice, reg, logger)
	b.keeper = newStateKeeper(cfg.State.Dir, logger)
	b.keeper.snap = b.snapshot
	b.learned = newLearnedDevices(cfg.Devices.MaxLearned, reg, func(ev LearnEvent) {
		logLearn(ev)
		b.onLearn(ev)
		b.presence.learn(ev)
		if ev.Kind == Learned || ev.Kind == Moved {
			b.keeper.touch()
		}
	})
	b.restored = b.restoreState()
	b.devices = newDeviceClients(&b.set, opts.CoAP, logger)
	b.devices.learned = b.learned
	b.devices.serverEndpoint = b.serverUDPEndpoint
	b.outs = &outputs{pub: b.mqtt, metrics: b.metrics, log: logger, publishTimeout: opts.PublishTimeout, handoverTimeout: opts.HandoverTimeout}
	if b.resources, err = newResources(&b.set, b.subs, b.metrics, logger, opts, limit, cfg.CoAP.Limits); err != nil {
		return nil, err
	}
	b.commands = newCommands(&b.set, b.subs, b.mqtt, b.devices, b.metrics, logger, opts, limit)
	b.commands.presence = b.presence
	b.commands.keep, b.commands.changed = b.keeper.enabled(), b.keeper.touch
	b.commands.state = b.keeper
	if len(b.restored) > 0 {
		b.commands.restored = make(chan struct{})
	}
	// A device that answers or pushes is online: commands waiting for it
	// are sent.
	// Presence hears of pushes from the learned registry, which knows
	// whether a request proved the device's name; here only of answers.
	answered := func(name string) {
		b.presence.answered(name)
		b.commands.markOnline(name)
	}
	b.watches = newWatcher(b.devices, b.outs, answered, b.metrics, logger, opts)
	b.watches.presence = b.presence
	b.watches.asleep = func(name string) bool { return b.commands.known(name) && !b.commands.awake(name, time.Now()) }
	b.watches.catalogs = newCatalogs(b.mqtt, limit, opts.HandoverTimeout, reg, logger)
	if cfg.Catalog.Topic != "" {
		if b.watches.catalogTopic, err = rules.ParseDeviceTopic(cfg.Catalog.Topic); err != nil {
			return nil, fmt.Errorf("catalog.topic: %w", err) // Validate refused it
		}
	}
	b.joinCluster(reg)
	pc := cache.New(cfg.Proxy.cacheOptions())
	awake := func(name string) bool { return b.commands.awake(name, time.Now()) }
	if b.proxy, err = newProxy(&b.set, b.devices, awake, pc, newProxyMetrics(reg, b.metrics, pc), logger, opts, cfg.CoAP.Limits); err != nil {
		return nil, err
	}
	b.proxy.answered, b.proxy.failed = answered, b.presence.unreachable
	b.watches.feed = feed{b.proxy}
	b.coap = newIngress(&b.set, b.outs, b.resources, b.commands.markOnline, b.metrics, logger, opts)
	b.coap.learned = b.learned
	b.coap.heardListed = answered
	b.coap.proxy = b.proxy
	b.coap.rateLimit(cfg.CoAP)
	b.coap.limits(cfg.CoAP, limit)
	var mounts []func(*http.ServeMux)
	if cfg.HTTP.ConsoleOn() {
		mounts = append(mounts, newConsole(b).register)
	}
	mounts = append(mounts, b.proxy.mountHTTP)
	b.http = newHTTPSide(reg, b.live, b.health.notReady, b.clusterStatus, mounts...)
	obs := b.resources.obs
	b.metrics.observers = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bridge_observers_active",
		Help: "CoAP clients observing the bridge's resource rules.",
	}, func() float64 { return float64(obs.Stats().Observers) })
	reg.MustRegister(b.metrics.observers)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "bridge_observers_unreachable_total",
		Help: "Observers of resource rules removed because their address reported ICMP port unreachable (its socket closed).",
	}, func() float64 { return float64(obs.Stats().Unreachable) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "bridge_observe_notifications_deferred_total",
		Help: "Notifications that found no room in the peer table and waited for the next check tick (at most one per observer per tick).",
	}, func() float64 { return float64(obs.Stats().Deferred) }))
	b.registerCoAPMetrics(b.coap.srv)
	return b, nil
}

// Check validates cfg and the rule files it names without starting
// anything, and returns a one-line summary. A rule error is a rules.Errors
// listing every "file:line: message".
func Check(cfg Config) (string, error) {
	set, err := checkedRules(cfg)
	if err != nil {
		return "", err
	}
	if err := checkFiles(cfg); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d devices, %d ingress, %d observe, %d poll, %d command, %d resource, %d proxy rules",
		len(set.Devices), len(set.Ingress), len(set.Observe), len(set.Poll), len(set.Commands), len(set.Resources), len(set.Proxies)), nil
}

// RuleWarnings lists what in cfg's rules is legal but likely a mistake:
// a rule glob that matches no file (the bridge runs without its rules
// until one appears).
func RuleWarnings(cfg Config) []string {
	return unmatchedGlobs(rules.ReadFiles(cfg.Rules, ruleBase(cfg)), ruleBase(cfg))
}

// unmatchedGlobs words a warning for each rule glob of f that matched no
// file in base.
func unmatchedGlobs(f *rules.Files, base string) []string {
	var out []string
	for _, g := range f.Unmatched {
		out = append(out, fmt.Sprintf("rules: %q matches no file (relative to %s)", g, base))
	}
	return out
}

// checkFiles loads what the config names besides the rules, as running
// the bridge does: the coaps listener's psk_file and certificates, the
// embedded broker's auth_file and a TLS broker's CA and client
// certificate. Every failure is reported.
func checkFiles(cfg Config) error {
	var errs []error
	if d := cfg.CoAP.DTLS; d.Listen != "" {
		if _, err := dtls.LoadServerConfig(d.serverFiles(), dtls.Limits{}); err != nil {
			errs = append(errs, fmt.Errorf("coap.dtls: %w", err))
		}
	}
	if cfg.MQTT.Broker == "embedded" {
		if f := cfg.MQTT.Embedded.AuthFile; f != "" {
			if _, err := mqttside.LoadACL(f); err != nil {
				errs = append(errs, fmt.Errorf("mqtt.embedded.auth_file: %w", err))
			}
		}
	} else if u, err := mqttside.ParseBrokerURL(cfg.MQTT.Broker); err == nil && mqttside.IsTLSScheme(u.Scheme) {
		if _, err := mqttOptions(cfg.MQTT, nil, nil).TLS.Config(u.Hostname()); err != nil {
			errs = append(errs, fmt.Errorf("mqtt: %w", err))
		}
	}
	return errors.Join(errs...)
}

// checkedRules validates cfg and loads its rules.
func checkedRules(cfg Config) (*rules.Set, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return LoadRules(cfg)
}

// LoadRules loads the rule files cfg names (relative globs are taken from
// the config file's directory) and checks them against cfg.
func LoadRules(cfg Config) (*rules.Set, error) {
	return loadRules(cfg, rules.ReadFiles(cfg.Rules, ruleBase(cfg)))
}

// HTTPAddr returns the bound address of the metrics/health endpoint, or nil
// when it does not listen (before Run, after Run returned).
func (b *Bridge) HTTPAddr() net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.httpAddr
}

// CoAPAddr returns the bound address of the CoAP server, or nil.
func (b *Bridge) CoAPAddr() net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.coapAddr
}

// DTLSAddr returns the bound address of the coaps listener, or nil.
func (b *Bridge) DTLSAddr() net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dtlsAddr
}

// MQTTAddr returns the embedded broker's TCP address, or "" for a remote
// broker, and when the broker does not listen (before Run, after Run
// returned).
func (b *Bridge) MQTTAddr() string {
	if b.state.Load() == stateStopped {
		return ""
	}
	return b.mqtt.addr()
}

// Ready reports whether the bridge runs and every component is up (MQTT
// connected, CoAP listening); it is false before Run and once Run is
// shutting down.
func (b *Bridge) Ready() bool {
	return b.running() && len(b.health.notReady()) == 0
}

// running reports whether Run has started everything and is not shutting
// down.
func (b *Bridge) running() bool { return b.state.Load() == stateRunning }

// Run starts every part and blocks until ctx ends, then shuts down within
// ShutdownGrace: the CoAP server stops taking requests, observations are
// cancelled, commands in progress are answered, in-flight publishes are
// flushed. It returns nil on a clean shutdown and an error when a part
// cannot start or fails; every goroutine it started has ended by then. A
// Bridge runs once: another call returns ErrAlreadyRun.
func (b *Bridge) Run(ctx context.Context) error {
	if !b.state.CompareAndSwap(stateNew, stateStarting) {
		return ErrAlreadyRun
	}
	sup := newSupervisor(b.log)
	rl := &reloader{b: b}
	defer func() { // on every return path: every part is shut down
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace-shutdownMargin)
		defer cancel()
		b.shutdown(sctx, sup, rl)
	}()

	b.health.set("mqtt", false)
	mo := mqttOptions(b.cfg.MQTT, b.log, b.onMQTTEvent)
	mo.KeepAlive = b.opts.MQTTKeepAlive
	mo.OnDropped = b.outs.dropped
	if b.cluster != nil {
		mo.ClientID = b.cfg.Cluster.clientID(b.cfg.MQTT)
		mo.StatusTopic = b.cfg.Cluster.memberTopic(b.cfg.MQTT)
	}
	mc, err := mqttside.New(mo)
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	b.mqtt.attach(mc)
	b.registerMQTTMetrics(mc)

	sup.start("resources", b.resources)
	if b.presence != nil {
		sup.start("presence", b.presence)
	}
	sup.start("commands", b.commands)
	// Subscribe before connecting: a remote broker delivers the commands it
	// kept in the bridge's session (while the bridge was down) right after
	// CONNACK, and a message that finds no subscription would be
	// acknowledged unhandled.
	first := rules.Compare(nil, b.set.Load())
	if err := b.applySubscriptions(ctx, first, nil, b.set.Load()); err != nil {
		return err
	}
	if b.cluster != nil {
		if err := b.mqtt.Subscribe(ctx, b.cluster.filter, 1, b.cluster); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		if err := b.mqtt.Subscribe(ctx, b.cluster.learnedFilter(), 1, clusterDirectory{b.cluster}); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		if err := b.mqtt.Subscribe(ctx, b.cluster.commandTopic(b.cfg.Cluster.Instance), 1, forwardedCommands{b}); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	if err := mc.Start(ctx); err != nil {
		return err // already says "mqtt: ..." and names the broker or listener
	}
	if mc.State() == mqttside.StateConnected {
		b.health.set("mqtt", true)
	}
	// Commands saved at the last shutdown wait again; their results can
	// be published now.
	b.restoreMu.Lock()
	b.commands.restoreCommands(b.restored)
	b.restored = nil
	b.restoreMu.Unlock()
	sup.start("state", b.keeper)
	// Watch the rule files before anything reports ready, so an edit made
	// once the bridge is up is never missed.
	rl.w = b.watchRules()
	sup.start("watches", b.watches)
	b.applyWatches(ctx, first, b.set.Load())
	if b.cluster != nil {
		sup.start("cluster", b.cluster)
	}

	if err := b.listenCoAP(); err != nil {
		return err
	}
	sup.start("proxy", b.proxy)
	sup.start("coap", b.coap)
	if l := b.cfg.HTTP.Listen; l != "" {
		addr, err := b.http.listen(l)
		if err != nil {
			return err
		}
		b.mu.Lock()
		b.httpAddr = addr
		b.mu.Unlock()
		sup.start("http", b.http)
		paths := "/metrics /healthz /readyz"
		if b.cfg.HTTP.ConsoleOn() {
			paths += " / /api/"
		}
		b.log.Info("http listening", "addr", addr.String(), "paths", paths)
	}
	b.state.Store(stateRunning)
	sup.start("reload", rl)
	b.log.Info("bridge running", "rules", b.metricsRuleCount(), "broker", redactURL(b.cfg.MQTT.Broker))

	select {
	case <-ctx.Done():
		return nil
	case err := <-sup.failed:
		return err
	}
}

// coapReadBuffer is the receive buffer asked for the bridge's CoAP UDP
// sockets: the listener and the client that requests and observes devices.
const coapReadBuffer = 4 << 20

// listenUDP opens a CoAP UDP socket on addr with a receive buffer of
// coapReadBuffer. A large buffer absorbs bursts: a flood on the listener,
// so the rate limit, not the kernel, decides whose datagrams are dropped;
// notifications of many observations on the client while the bridge is
// briefly busy (the default, about 200 KB, holds well under a second of
// 10,000 notifications/s, and a NON notification dropped there is lost).
// The kernel caps the buffer at net.core.rmem_max.
func listenUDP(addr string) (net.PacketConn, error) {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	if u, ok := conn.(*net.UDPConn); ok {
		_ = u.SetReadBuffer(coapReadBuffer)
	}
	return conn, nil
}

// listenCoAP opens the CoAP listeners the config names and hands them to
// the CoAP server.
func (b *Bridge) listenCoAP() error {
	if l := b.cfg.CoAP.Listen; l != "" {
		b.health.set("coap", false)
		conn, err := listenUDP(l)
		if err != nil {
			return fmt.Errorf("coap listen %s: %w", l, err)
		}
		b.coap.add("coap", conn)
		b.mu.Lock()
		b.coapAddr = conn.LocalAddr()
		b.mu.Unlock()
		b.health.set("coap", true)
		b.log.Info("coap listening", "addr", conn.LocalAddr().String())
	}
	if l := b.cfg.CoAP.DTLS.Listen; l != "" {
		conn, err := b.listenDTLS(l)
		if err != nil {
			return err
		}
		b.coap.add("coaps", conn)
		b.mu.Lock()
		b.dtlsAddr = conn.LocalAddr()
		b.mu.Unlock()
		b.log.Info("coaps listening", "addr", conn.LocalAddr().String())
	}
	return nil
}

// shutdown stops intake first, then the work in progress, then flushes
// MQTT, within ctx, and waits for every part's Run to return.
func (b *Bridge) shutdown(ctx context.Context, sup *supervisor, rl *reloader) {
	b.state.Store(stateStopping)
	b.log.Info("shutting down")
	sup.stop(ctx, "reload", rl) // no reload races the shutdown
	// Requests are refused from here on; the sockets stay open until the
	// watches and commands are done: a learned device is observed and
	// commanded from the bridge's own CoAP port, which its deregistration
	// and the answers in flight go through.
	if err := b.coap.drain(ctx); err != nil {
		b.log.Warn("coap shutdown: requests cut short", "err", err)
	}
	if b.cluster != nil {
		sup.stop(ctx, "cluster", b.cluster)
	}
	sup.stop(ctx, "proxy", b.proxy)
	sup.stop(ctx, "watches", b.watches)
	sup.stop(ctx, "commands", b.commands)
	sup.stop(ctx, "coap", b.coap)
	if b.presence != nil {
		// The documents of the last changes go out; the others stay as
		// they are (the status topic says the bridge is gone).
		sup.stop(ctx, "presence", b.presence)
	}
	sup.stop(ctx, "state", b.keeper)
	b.keeper.save() // the queues as Shutdown left them
	if err := b.mqtt.Close(ctx); err != nil {
		b.log.Warn("mqtt close", "err", err)
	}
	b.devices.Close()
	if err := sup.stop(ctx, "http", b.http); err != nil {
		b.log.Warn("http shutdown", "err", err)
	}
	sup.stop(ctx, "resources", b.resources)
	sup.wait(shutdownMargin / 2)
	b.mu.Lock()
	b.httpAddr, b.coapAddr, b.dtlsAddr = nil, nil, nil
	b.mu.Unlock()
	b.state.Store(stateStopped)
}

// apply moves the running subscriptions and watches from the old rule set
// to the new one: only the difference is applied, so unchanged
// observations, polls and subscriptions keep running.
func (b *Bridge) apply(ctx context.Context, old, new *rules.Set) error {
	d := rules.Compare(old, new)
	err := b.applySubscriptions(ctx, d, old, new)
	b.applyWatches(ctx, d, new)
	b.proxy.rulesRemoved(d)
	return err
}

// applySubscriptions makes new the running rule set and applies the
// subscription part of d, the difference from old.
func (b *Bridge) applySubscriptions(ctx context.Context, d rules.Diff, old, new *rules.Set) error {
	kinds := map[string]kindMask{}
	for _, s := range b.mqttSubscriptions(new) {
		kinds[s.Filter] |= maskOf(s.Kind)
	}
	b.filterKinds.Store(&kinds)
	b.set.Store(new)

	removed, added := d.Subscriptions.Removed, d.Subscriptions.Added
	for _, u := range d.Subscriptions.Changed {
		added = append(added, u.New) // a new QoS replaces the subscription
	}
	if b.cluster != nil {
		// Command filters are shared ones: the rules' diff does not
		// say which MQTT filters changed.
		removed, added = subscriptionChanges(b.mqttSubscriptions(old), b.mqttSubscriptions(new))
	}
	var errs []error
	for _, s := range removed {
		b.subs.set(s.Filter, false)
		if err := b.mqtt.Unsubscribe(ctx, s.Filter); err != nil {
			b.log.Warn("unsubscribe failed", "filter", s.Filter, "err", err)
		}
	}
	for _, s := range added {
		if err := b.mqtt.Subscribe(ctx, s.Filter, s.QoS, mqttside.HandlerFunc(b.serveMQTT)); err != nil {
			errs = append(errs, fmt.Errorf("subscribe %s (rule %s): %w", s.Filter, s.Rule, err))
			continue
		}
		b.subs.set(s.Filter, true)
	}
	return errors.Join(errs...)
}

// applyWatches applies the watch part of d (observations and polls) and
// logs what changed.
func (b *Bridge) applyWatches(ctx context.Context, d rules.Diff, new *rules.Set) {
	wa, wr, wc, wk := b.watches.apply(ctx, b.learnedWatches(new), b.catalogDevices(new, b.learned.names()))
	b.metrics.rulesLoaded.Set(float64(b.metricsRuleCountOf(new)))
	known := func(name string) bool { _, _, ok := b.locateDevice(name); return ok }
	if n, c := b.presence.prune(), b.watches.catalogs.prune(ctx, known); n+c > 0 {
		b.log.Info("devices removed: presence and catalog documents cleared", "devices", n, "catalogs_cleared", c)
	}
	if !d.Empty() {
		b.log.Info("rules applied",
			"rules_added", len(d.Rules.Added), "rules_removed", len(d.Rules.Removed), "rules_changed", len(d.Rules.Changed), "rules_kept", len(d.Rules.Kept),
			"watches_added", wa, "watches_removed", wr, "watches_restarted", wc, "watches_kept", wk,
			"subscriptions_added", len(d.Subscriptions.Added), "subscriptions_removed", len(d.Subscriptions.Removed))
	}
}

// kindMask says which kinds of rule need an MQTT filter.
type kindMask uint8

const (
	needCommand kindMask = 1 << iota
	needResource
)

func maskOf(k rules.Kind) kindMask {
	switch k {
	case rules.KindCommand:
		return needCommand
	case rules.KindResource:
		return needResource
	}
	return 0
}

// serveMQTT dispatches a delivery to the rule kinds that subscribed its
// filter. The message is acknowledged once every kind is done with it.
func (b *Bridge) serveMQTT(d *mqttside.Delivery) {
	var mask kindMask
	if k := b.filterKinds.Load(); k != nil {
		mask = (*k)[d.Filter]
	}
	if mask&needResource != 0 {
		b.resources.keep(d)
	}
	if mask&needCommand != 0 {
		b.commands.ServeMQTT(d) // acknowledges when the CoAP exchange ends
		return
	}
	d.Ack()
}

func (b *Bridge) onMQTTEvent(e mqttside.Event) {
	b.health.set("mqtt", e.State == mqttside.StateConnected)
	if e.State == mqttside.StateConnected {
		b.watches.catalogs.forget() // the broker may have lost what it retained
	}
	if e.Err != nil {
		b.log.Warn("mqtt connection", "state", e.State.String(), "err", e.Err)
	} else {
		b.log.Info("mqtt connection", "state", e.State.String())
	}
}

func (b *Bridge) metricsRuleCount() int { return b.metricsRuleCountOf(b.set.Load()) }

func (b *Bridge) metricsRuleCountOf(s *rules.Set) int {
	return len(s.Ingress) + len(s.Observe) + len(s.Poll) + len(s.Commands) + len(s.Resources) + len(s.Proxies)
}
