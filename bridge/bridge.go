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
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/mqttside"

	"github.com/coap-mqtt/bridge/rules"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	// CommandQueue bounds commands held per offline device (100).
	CommandQueue int
	// CommandQueueTTL expires commands held for an offline device (10m).
	CommandQueueTTL time.Duration
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
	// DiscoveryRefresh is how often discover queries are run again (5m).
	DiscoveryRefresh time.Duration
	// ResourceCacheSize bounds the topics whose latest message resource
	// rules keep (10000).
	ResourceCacheSize int
	// CoAP tunes the message layer of the bridge's CoAP server and clients.
	CoAP coapside.EndpointOptions
	// ReloadSettle is how long the rule files must stay unchanged before a
	// reload reads them, and between the two reads that must agree (250ms).
	ReloadSettle time.Duration

	noFileWatch bool // reload only on TriggerReload (tests)
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
	def(&o.CommandQueueTTL, 10*time.Minute)
	def(&o.ProbeMin, 2*time.Second)
	def(&o.ProbeMax, time.Minute)
	def(&o.ObserveFallbackInterval, 30*time.Second)
	def(&o.ReobserveMin, time.Second)
	def(&o.ReobserveMax, 5*time.Minute)
	def(&o.DiscoveryRefresh, 5*time.Minute)
	def(&o.ReloadSettle, 250*time.Millisecond)
	defInt(&o.FallbackRounds, 10)
	defInt(&o.CommandWorkers, 32)
	defInt(&o.CommandBacklog, 1024)
	defInt(&o.CommandQueue, 100)
	defInt(&o.ResourceCacheSize, 10000)
	if o.RetryMaxAge == 0 {
		o.RetryMaxAge = 5
	}
	if o.ResourceMaxAge == 0 {
		o.ResourceMaxAge = 60
	}
}

// Bridge is one running instance. Create it with New and start it with Run.
type Bridge struct {
	cfg     Config
	opts    Options
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	health  *health

	set         atomic.Pointer[rules.Set]
	filterKinds atomic.Pointer[map[string]kindMask] // MQTT filter -> rule kinds that need it
	reloadMu    sync.Mutex                          // serialises reloads; guards applied and rejected
	reloadCh    chan struct{}
	applied     *ruleFiles // the files the running rules came from
	rejected    *ruleFiles // the files of the last reload if it was rejected or refused
	mqtt        mqttside.Client
	devices     *deviceClients
	commands    *commands
	resources   *resourceCache
	watches     *watcher
	coap        *coapside.Server
	obs         *coapside.ObserveServer
	liveCheck   atomic.Pointer[func() error] // replaces the CoAP listener check in tests

	mu       sync.Mutex
	psk      *dtls.PSKStore // the coaps listener's keys, reloaded with the rules
	httpAddr net.Addr
	coapAddr net.Addr
	dtlsAddr net.Addr
}

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
	opts.setDefaults()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	b := &Bridge{
		cfg:       cfg,
		opts:      opts,
		log:       logger,
		reg:       reg,
		metrics:   newMetrics(reg),
		health:    newHealth(),
		resources: newResourceCache(opts.ResourceCacheSize),
		reloadCh:  make(chan struct{}, 1),
		applied:   files,
	}
	obs, err := coapside.NewObserveServer(coapside.ObserveOptions{Logger: logger, MaxAge: opts.ResourceMaxAge})
	if err != nil {
		return nil, err
	}
	b.obs = obs
	b.metrics.observers = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bridge_observers_active",
		Help: "CoAP clients observing the bridge's resource rules.",
	}, func() float64 { return float64(obs.Stats().Observers) })
	reg.MustRegister(b.metrics.observers)
	b.set.Store(set)
	return b, nil
}

// Check validates cfg and the rule files it names without starting
// anything, and returns a one-line summary. A rule error is a rules.Errors
// listing every "file:line: message".
func Check(cfg Config) (string, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	set, err := LoadRules(cfg)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d devices, %d ingress, %d observe, %d poll, %d command, %d resource rules",
		len(set.Devices), len(set.Ingress), len(set.Observe), len(set.Poll), len(set.Commands), len(set.Resources)), nil
}

// LoadRules loads the rule files cfg names (relative globs are taken from
// the config file's directory) and checks them against cfg.
func LoadRules(cfg Config) (*rules.Set, error) {
	return loadRules(cfg, rules.ReadFiles(cfg.Rules, ruleBase(cfg)))
}

// HTTPAddr returns the bound address of the metrics/health endpoint, or nil
// before it listens.
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
// broker or before it listens.
func (b *Bridge) MQTTAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.mqtt.(*mqttside.Embedded); ok {
		return e.Addr()
	}
	return ""
}

// Ready reports whether every component is up (MQTT connected, CoAP
// listening).
func (b *Bridge) Ready() bool { return len(b.health.notReady()) == 0 }

// Run starts every component and blocks until ctx ends, then shuts down
// within ShutdownGrace: the CoAP server stops taking requests, observations
// are cancelled, in-flight publishes are flushed. It returns nil on a clean
// shutdown and an error when a component cannot start.
func (b *Bridge) Run(ctx context.Context) error {
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	errc := make(chan error, 4)
	var srv *http.Server
	var servers sync.WaitGroup
	defer func() { // on every return path: everything started is stopped
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace-shutdownMargin)
		defer cancel()
		b.shutdown(sctx, srv)
		cancelRun()
		servers.Wait()
	}()

	b.health.set("mqtt", false)
	mc, err := mqttside.New(mqttOptions(b.cfg.MQTT, b.log, b.onMQTTEvent))
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	b.mu.Lock()
	b.mqtt = mc
	b.mu.Unlock()
	b.registerMQTTMetrics(mc)

	b.devices = newDeviceClients(&b.set, b.opts.CoAP, b.log)
	b.commands = newCommands(b)
	b.watches = newWatcher(runCtx, b)
	// Subscribe before connecting: a remote broker delivers the commands it
	// kept in the bridge's session (while the bridge was down) right after
	// CONNACK, and a message that finds no subscription would be
	// acknowledged unhandled.
	first := rules.Compare(nil, b.set.Load())
	if err := b.applySubscriptions(ctx, first, b.set.Load()); err != nil {
		return err
	}
	if err := mc.Start(ctx); err != nil {
		return err // already says "mqtt: ..." and names the broker or listener
	}
	if mc.State() == mqttside.StateConnected {
		b.health.set("mqtt", true)
	}
	// Watch the rule files before anything reports ready, so an edit made
	// once the bridge is up is never missed.
	rw := b.watchRules()
	loopOwnsWatcher := false
	defer func() {
		if rw != nil && !loopOwnsWatcher {
			rw.Close()
		}
	}()
	b.applyWatches(first, b.set.Load())

	servers.Add(1)
	go func() {
		defer servers.Done()
		b.obs.Run(runCtx)
	}()
	b.coap = &coapside.Server{Handler: routeHandler{b}, Options: coapside.ServerOptions{EndpointOptions: b.opts.CoAP}}
	b.coap.Options.Logger = b.log
	b.registerCoAPMetrics(b.coap)
	if l := b.cfg.CoAP.Listen; l != "" {
		b.health.set("coap", false)
		conn, err := net.ListenPacket("udp", l)
		if err != nil {
			return fmt.Errorf("coap listen %s: %w", l, err)
		}
		b.mu.Lock()
		b.coapAddr = conn.LocalAddr()
		b.mu.Unlock()
		servers.Add(1)
		go func() {
			defer servers.Done()
			if err := b.coap.Serve(conn); err != nil && !errors.Is(err, coapside.ErrClosed) {
				errc <- fmt.Errorf("coap: %w", err)
			}
		}()
		b.health.set("coap", true)
		b.log.Info("coap listening", "addr", conn.LocalAddr().String())
	}
	if l := b.cfg.CoAP.DTLS.Listen; l != "" {
		conn, err := b.listenDTLS(l)
		if err != nil {
			return err
		}
		b.mu.Lock()
		b.dtlsAddr = conn.LocalAddr()
		b.mu.Unlock()
		servers.Add(1)
		go func() {
			defer servers.Done()
			if err := b.coap.Serve(conn); err != nil && !errors.Is(err, coapside.ErrClosed) {
				errc <- fmt.Errorf("coaps: %w", err)
			}
		}()
		b.log.Info("coaps listening", "addr", conn.LocalAddr().String())
	}

	if b.cfg.HTTP.Listen != "" {
		ln, err := net.Listen("tcp", b.cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http listen %s: %w", b.cfg.HTTP.Listen, err)
		}
		b.mu.Lock()
		b.httpAddr = ln.Addr()
		b.mu.Unlock()
		srv = &http.Server{Handler: b.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
		servers.Add(1)
		go func() {
			defer servers.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		}()
		b.log.Info("http listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	}
	reloadCtx, stopReload := context.WithCancel(runCtx)
	reloadDone := make(chan struct{})
	loopOwnsWatcher = true
	go func() {
		defer close(reloadDone)
		b.reloadLoop(reloadCtx, rw)
	}()
	defer func() { // runs before the shutdown above: no reload races it
		stopReload()
		<-reloadDone
	}()
	b.log.Info("bridge running", "rules", b.metricsRuleCount(), "broker", b.cfg.MQTT.Broker)

	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// shutdown stops intake first, then the work in progress, then flushes MQTT.
func (b *Bridge) shutdown(ctx context.Context, srv *http.Server) {
	b.log.Info("shutting down")
	if b.coap != nil {
		cctx, cancel := context.WithTimeout(ctx, drainRequests)
		if err := b.coap.Shutdown(cctx); err != nil {
			b.log.Warn("coap shutdown: requests cut short", "err", err)
		}
		cancel()
	}
	if b.watches != nil {
		b.watches.stop(ctx)
	}
	if b.commands != nil {
		b.commands.Close(ctx)
	}
	if b.mqtt != nil {
		if err := b.mqtt.Close(ctx); err != nil {
			b.log.Warn("mqtt close", "err", err)
		}
	}
	if b.devices != nil {
		b.devices.Close()
	}
	if srv != nil {
		if err := srv.Shutdown(ctx); err != nil {
			b.log.Warn("http shutdown", "err", err)
		}
	}
}

// apply moves the running subscriptions and watches from the old rule set
// to the new one: only the difference is applied, so unchanged
// observations, polls and subscriptions keep running.
func (b *Bridge) apply(ctx context.Context, old, new *rules.Set) error {
	d := rules.Compare(old, new)
	err := b.applySubscriptions(ctx, d, new)
	b.applyWatches(d, new)
	return err
}

// applySubscriptions makes new the running rule set and applies the
// subscription part of d.
func (b *Bridge) applySubscriptions(ctx context.Context, d rules.Diff, new *rules.Set) error {
	kinds := map[string]kindMask{}
	for _, s := range new.Subscriptions() {
		kinds[s.Filter] |= maskOf(s.Kind)
	}
	b.filterKinds.Store(&kinds)
	b.set.Store(new)

	var errs []error
	for _, s := range d.Subscriptions.Removed {
		b.commands.setLive(s.Filter, false)
		if err := b.mqtt.Unsubscribe(ctx, s.Filter); err != nil {
			b.log.Warn("unsubscribe failed", "filter", s.Filter, "err", err)
		}
	}
	subscribe := func(s rules.Subscription) {
		if err := b.mqtt.Subscribe(ctx, s.Filter, s.QoS, mqttside.HandlerFunc(b.serveMQTT)); err != nil {
			errs = append(errs, fmt.Errorf("subscribe %s (rule %s): %w", s.Filter, s.Rule, err))
			return
		}
		b.commands.setLive(s.Filter, true)
	}
	for _, u := range d.Subscriptions.Changed {
		subscribe(u.New) // a new QoS replaces the subscription
	}
	for _, s := range d.Subscriptions.Added {
		subscribe(s)
	}
	return errors.Join(errs...)
}

// applyWatches applies the watch part of d (observations and polls) and
// logs what changed.
func (b *Bridge) applyWatches(d rules.Diff, new *rules.Set) {
	wa, wr, wc, wk := b.watches.apply(new.Watches())
	b.metrics.rulesLoaded.Set(float64(b.metricsRuleCountOf(new)))
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
		if limit := b.maxPayload(); len(d.Payload) > limit {
			// A remote broker delivers whatever it accepted.
			b.metrics.errors.WithLabelValues("", reasonTooLarge).Inc()
			b.log.Warn("mqtt message not kept for resource rules: payload too large",
				"topic", d.Topic, "bytes", len(d.Payload), "limit", limit)
		} else {
			b.resources.store(d)
			b.notifyObservers(d.Topic)
		}
	}
	if mask&needCommand != 0 {
		b.commands.ServeMQTT(d) // acknowledges when the CoAP exchange ends
		return
	}
	d.Ack()
}

// deviceSeen records that a device answered or pushed: commands waiting for
// it are sent.
func (b *Bridge) deviceSeen(name string) {
	if b.commands != nil {
		b.commands.markOnline(name)
	}
}

func (b *Bridge) onMQTTEvent(e mqttside.Event) {
	b.health.set("mqtt", e.State == mqttside.StateConnected)
	if e.Err != nil {
		b.log.Warn("mqtt connection", "state", e.State.String(), "err", e.Err)
	} else {
		b.log.Info("mqtt connection", "state", e.State.String())
	}
}

func (b *Bridge) metricsRuleCount() int { return b.metricsRuleCountOf(b.set.Load()) }

func (b *Bridge) metricsRuleCountOf(s *rules.Set) int {
	return len(s.Ingress) + len(s.Observe) + len(s.Poll) + len(s.Commands) + len(s.Resources)
}

func (b *Bridge) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := b.live(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not live: %v\n", err)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := b.live(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not live: %v\n", err)
			return
		}
		if missing := b.health.notReady(); len(missing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", missing)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}
