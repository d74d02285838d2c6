package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/cache"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
)

// Config is the bridge's configuration, as loaded from config.toml (and the
// BRIDGE_<SECTION>_<KEY> environment overrides) by cmd/bridge. It is a plain
// struct: library packages receive typed options derived from it.
type Config struct {
	// Rules lists glob patterns of rule files, relative to the config file's
	// directory unless absolute.
	Rules []string   `mapstructure:"rules"`
	CoAP  CoAPConfig `mapstructure:"coap"`
	MQTT  MQTTConfig `mapstructure:"mqtt"`
	HTTP  HTTPConfig `mapstructure:"http"`
	Log   LogConfig  `mapstructure:"log"`
	// Devices configures devices learned from their own requests.
	Devices DevicesConfig `mapstructure:"devices"`
	// State keeps learned devices and queued commands across restarts.
	State StateConfig `mapstructure:"state"`
	// Catalog publishes every device's /.well-known/core on MQTT.
	Catalog CatalogConfig `mapstructure:"catalog"`
	// Cluster lets bridges on one broker share the work.
	Cluster ClusterConfig `mapstructure:"cluster"`
	// Metrics configures optional metrics.
	Metrics MetricsConfig `mapstructure:"metrics"`
	// Proxy bounds the response cache of [[proxy]] rules.
	Proxy ProxyConfig `mapstructure:"proxy"`

	// File is the path the configuration was read from ("" when built in
	// code). It anchors relative rule globs and error positions.
	File string `mapstructure:"-"`
}

// CoAPConfig configures the bridge's own CoAP server.
type CoAPConfig struct {
	// Listen is the UDP address of the CoAP server; "" disables it.
	Listen string `mapstructure:"listen"`
	// RateLimit is the requests per second allowed from each source
	// address, on the UDP and the DTLS listener alike; 0 turns it off.
	// Beyond it a source gets 4.29 Too Many Requests with Max-Age, once per
	// Max-Age period, and is otherwise dropped.
	RateLimit float64 `mapstructure:"rate_limit"`
	// RateBurst is each source's bucket size; 0 means RateLimit.
	RateBurst int `mapstructure:"rate_burst"`
	// RateBlock is how long the kernel drops a source that goes on
	// flooding after being refused: refused more than ten times its bucket
	// (at least 1,000 times) within a second. Linux UDP listener only; 0
	// turns it off.
	RateBlock time.Duration `mapstructure:"rate_block"`
	DTLS      DTLSConfig    `mapstructure:"dtls"`
	// Limits bounds the state the CoAP server holds for clients.
	Limits LimitsConfig `mapstructure:"limits"`
}

// LimitsConfig bounds the state the CoAP server keeps for its clients, per
// source address and in total, so that one source can never take a whole
// pool. Zero means the default; a limit that is hit is counted in
// bridge_coap_limit_hits_total and logged at Warn at most once a second.
type LimitsConfig struct {
	// Observers bounds observers of resource rules in total (100,000).
	Observers int `mapstructure:"observers"`
	// ObserversPerSource bounds one source address's observers (1,000).
	ObserversPerSource int `mapstructure:"observers_per_source"`
	// ObserveCheck is the longest an observer goes without acknowledging
	// a confirmable notification: then it gets one even when the resource
	// has not changed, and is removed when that is reset or never
	// acknowledged (60 s).
	ObserveCheck time.Duration `mapstructure:"observe_check"`
	// Block1Transfers bounds Block1 uploads in progress in total (256).
	Block1Transfers int `mapstructure:"block1_transfers"`
	// Block1TransfersPerSource bounds one source address's uploads (16).
	Block1TransfersPerSource int `mapstructure:"block1_transfers_per_source"`
	// Block1Timeout reclaims an upload idle this long (30 s).
	Block1Timeout time.Duration `mapstructure:"block1_timeout"`
	// PendingPerPeer bounds the confirmable messages queued for one client
	// behind NSTART, the CON notifications to an observer (64); beyond it
	// a notification goes out as NON.
	PendingPerPeer int `mapstructure:"pending_per_peer"`
	// DTLSHandshakes bounds DTLS handshakes in progress in total (128).
	DTLSHandshakes int `mapstructure:"dtls_handshakes"`
	// DTLSHandshakesPerSource bounds one source address's handshakes in
	// progress (16).
	DTLSHandshakesPerSource int `mapstructure:"dtls_handshakes_per_source"`
	// HandlersPerSource bounds the requests of one source address being
	// handled at once (32, at most coapside.DefaultMaxConcurrent, the
	// server's total); beyond it a CON gets 5.03 with Max-Age and a NON
	// is dropped.
	HandlersPerSource int `mapstructure:"handlers_per_source"`
}

// Default resource limits (coap.limits).
const (
	DefaultObservers                = 100_000
	DefaultObserversPerSource       = 1000
	DefaultObserveCheck             = 60 * time.Second
	DefaultBlock1Transfers          = 256
	DefaultBlock1TransfersPerSource = 16
	DefaultBlock1Timeout            = 30 * time.Second
	DefaultPendingPerPeer           = 64
	DefaultDTLSHandshakes           = 128
	DefaultDTLSHandshakesPerSource  = 16
	DefaultHandlersPerSource        = coapside.DefaultMaxConcurrentPerSource
)

// withDefaults returns l with every zero limit set to its default.
func (l LimitsConfig) withDefaults() LimitsConfig {
	orig := l
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.Observers, DefaultObservers)
	def(&l.ObserversPerSource, DefaultObserversPerSource)
	defDur(&l.ObserveCheck, DefaultObserveCheck)
	def(&l.Block1Transfers, DefaultBlock1Transfers)
	def(&l.Block1TransfersPerSource, DefaultBlock1TransfersPerSource)
	defDur(&l.Block1Timeout, DefaultBlock1Timeout)
	def(&l.PendingPerPeer, DefaultPendingPerPeer)
	def(&l.DTLSHandshakes, DefaultDTLSHandshakes)
	def(&l.DTLSHandshakesPerSource, DefaultDTLSHandshakesPerSource)
	def(&l.HandlersPerSource, DefaultHandlersPerSource)
	// A default share never exceeds a smaller total set in the file.
	if orig.ObserversPerSource == 0 {
		l.ObserversPerSource = min(l.ObserversPerSource, l.Observers)
	}
	if orig.Block1TransfersPerSource == 0 {
		l.Block1TransfersPerSource = min(l.Block1TransfersPerSource, l.Block1Transfers)
	}
	if orig.DTLSHandshakesPerSource == 0 {
		l.DTLSHandshakesPerSource = min(l.DTLSHandshakesPerSource, l.DTLSHandshakes)
	}
	return l
}

// validate adds a problem for every negative limit and for a per-source
// limit above its total.
func (l LimitsConfig) validate(add func(key, format string, args ...any)) {
	count := func(key string, v int) {
		if v < 0 {
			add("coap.limits."+key, "must not be negative (0 means the default), got %d", v)
		}
	}
	dur := func(key string, v time.Duration) {
		if v < 0 {
			add("coap.limits."+key, "must not be negative (0 means the default), got %v", v)
		}
	}
	count("observers", l.Observers)
	count("observers_per_source", l.ObserversPerSource)
	dur("observe_check", l.ObserveCheck)
	count("block1_transfers", l.Block1Transfers)
	count("block1_transfers_per_source", l.Block1TransfersPerSource)
	dur("block1_timeout", l.Block1Timeout)
	count("pending_per_peer", l.PendingPerPeer)
	count("dtls_handshakes", l.DTLSHandshakes)
	count("dtls_handshakes_per_source", l.DTLSHandshakesPerSource)
	count("handlers_per_source", l.HandlersPerSource)
	d := l.withDefaults()
	perSource := func(key string, v, total int, totalKey string) {
		if v > total {
			add("coap.limits."+key, "%d is more than %s (%d): one source could take every slot", v, totalKey, total)
		}
	}
	if l.ObserversPerSource >= 0 && l.Observers >= 0 {
		perSource("observers_per_source", d.ObserversPerSource, d.Observers, "observers")
	}
	if l.Block1TransfersPerSource >= 0 && l.Block1Transfers >= 0 {
		perSource("block1_transfers_per_source", d.Block1TransfersPerSource, d.Block1Transfers, "block1_transfers")
	}
	if l.DTLSHandshakesPerSource >= 0 && l.DTLSHandshakes >= 0 {
		perSource("dtls_handshakes_per_source", d.DTLSHandshakesPerSource, d.DTLSHandshakes, "dtls_handshakes")
	}
	if l.HandlersPerSource >= 0 {
		perSource("handlers_per_source", d.HandlersPerSource, coapside.DefaultMaxConcurrent, "the handlers running at once in total")
	}
}

// DevicesConfig configures the devices the bridge learns from their
// requests (devices behind NAT, reached where they last spoke from).
type DevicesConfig struct {
	// MaxLearned bounds the learned devices; once reached, new names are
	// not learned (counted in bridge_learned_refused_total). 0 means
	// DefaultMaxLearned.
	MaxLearned int `mapstructure:"max_learned"`
	// Awake is how long a learned device listens after each of its
	// uplinks: online within it, asleep after; a command for a device
	// silent for longer is queued until its next uplink (queue mode). 0
	// means DefaultAwake.
	Awake time.Duration `mapstructure:"awake"`
	// OfflineAfter is how long a device that pushes may stay silent
	// before it is offline; longer than Awake. 0 means DefaultOfflineAfter.
	OfflineAfter time.Duration `mapstructure:"offline_after"`
	// PresenceTopic is the topic template ({device}) of each device's
	// retained presence document; "" publishes none.
	PresenceTopic string `mapstructure:"presence_topic"`
	// QueueSize bounds the commands held per device while it sleeps or is
	// offline; 0 means DefaultQueueSize.
	QueueSize int `mapstructure:"queue_size"`
	// QueueTTL is how long a command may wait in a device's queue before
	// it is answered expired; 0 means DefaultQueueTTL. A command rule's
	// queue_ttl and an MQTT 5 message expiry shorten it.
	QueueTTL time.Duration `mapstructure:"queue_ttl"`
}

// Defaults of the devices section's queue mode.
const (
	DefaultQueueSize = 100
	DefaultQueueTTL  = 10 * time.Minute
)

// StateConfig configures what the bridge keeps on disk.
type StateConfig struct {
	// Dir holds the learned devices and the commands queued for sleeping
	// or offline devices (one file, replaced atomically); "" keeps them in
	// memory only. It must be an existing, writable directory.
	Dir string `mapstructure:"dir"`
}

// presenceThresholds returns Awake and OfflineAfter with their defaults.
func (d DevicesConfig) presenceThresholds() (awake, offlineAfter time.Duration) {
	awake, offlineAfter = d.Awake, d.OfflineAfter
	if awake == 0 {
		awake = DefaultAwake
	}
	if offlineAfter == 0 {
		offlineAfter = DefaultOfflineAfter
	}
	return awake, offlineAfter
}

// validate adds a problem for a negative threshold, thresholds in the
// wrong order and a presence topic that is not a {device} template.
func (d DevicesConfig) validate(add func(key, format string, args ...any)) {
	if d.MaxLearned < 0 {
		add("devices.max_learned", "must not be negative (0 means %d), got %d", DefaultMaxLearned, d.MaxLearned)
	}
	if d.Awake < 0 {
		add("devices.awake", "must not be negative (0 means %v), got %v", DefaultAwake, d.Awake)
	}
	if d.OfflineAfter < 0 {
		add("devices.offline_after", "must not be negative (0 means %v), got %v", DefaultOfflineAfter, d.OfflineAfter)
	}
	if awake, offline := d.presenceThresholds(); d.Awake >= 0 && d.OfflineAfter >= 0 && offline <= awake {
		add("devices.offline_after", "%v must be longer than devices.awake (%v): a silent device is asleep before it is offline", offline, awake)
	}
	if d.PresenceTopic != "" {
		if _, err := rules.ParseDeviceTopic(d.PresenceTopic); err != nil {
			add("devices.presence_topic", "%q: %v", d.PresenceTopic, err)
		}
	}
	if d.QueueSize < 0 {
		add("devices.queue_size", "must not be negative (0 means %d), got %d", DefaultQueueSize, d.QueueSize)
	}
	if d.QueueTTL < 0 {
		add("devices.queue_ttl", "must not be negative (0 means %v), got %v", DefaultQueueTTL, d.QueueTTL)
	}
}

// CatalogConfig configures the device catalog: each device's
// /.well-known/core (RFC 6690) as a retained JSON document on MQTT.
type CatalogConfig struct {
	// Topic is the topic template ({device}) of the catalog of every
	// listed device with a url, and of every learned device when it is
	// learned or moves; "" publishes none. Observe rules with discover
	// have their own catalog_topic.
	Topic string `mapstructure:"topic"`
}

// validate adds a problem for a topic that is not a {device} template.
func (c CatalogConfig) validate(add func(key, format string, args ...any)) {
	if c.Topic != "" {
		if _, err := rules.ParseDeviceTopic(c.Topic); err != nil {
			add("catalog.topic", "%q: %v", c.Topic, err)
		}
	}
}

// MetricsConfig configures optional metrics.
type MetricsConfig struct {
	// PerDevice exports bridge_device_* metrics labelled by device name.
	PerDevice bool `mapstructure:"per_device"`
	// PerDeviceMax bounds the device label values: later devices are
	// counted as device="_overflow". 0 means DefaultPerDeviceMax.
	PerDeviceMax int `mapstructure:"per_device_max"`
}

// validate adds a problem for a negative per_device_max.
func (m MetricsConfig) validate(add func(key, format string, args ...any)) {
	if m.PerDeviceMax < 0 {
		add("metrics.per_device_max", "must not be negative (0 means %d), got %d", DefaultPerDeviceMax, m.PerDeviceMax)
	}
}

// Defaults of ProxyConfig.
const (
	DefaultProxyCacheEntries = 10_000
	DefaultProxyCacheBytes   = 32 << 20
)

// ProxyConfig bounds the response cache of [[proxy]] rules (RFC 7252
// §5.6): when either bound is reached the least recently used responses
// are evicted.
type ProxyConfig struct {
	// CacheEntries bounds the cached responses; 0 means
	// DefaultProxyCacheEntries.
	CacheEntries int `mapstructure:"cache_entries"`
	// CacheBytes bounds their payloads and keys in bytes; 0 means
	// DefaultProxyCacheBytes. A response larger than an eighth of it is
	// not cached.
	CacheBytes int64 `mapstructure:"cache_bytes"`
}

// validate adds a problem for a negative bound.
func (p ProxyConfig) validate(add func(key, format string, args ...any)) {
	if p.CacheEntries < 0 {
		add("proxy.cache_entries", "must not be negative (0 means %d), got %d", DefaultProxyCacheEntries, p.CacheEntries)
	}
	if p.CacheBytes < 0 {
		add("proxy.cache_bytes", "must not be negative (0 means %d), got %d", DefaultProxyCacheBytes, p.CacheBytes)
	}
}

// cacheOptions are the cache's bounds with their defaults.
func (p ProxyConfig) cacheOptions() cache.Options {
	o := cache.Options{MaxEntries: p.CacheEntries, MaxBytes: p.CacheBytes}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultProxyCacheEntries
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultProxyCacheBytes
	}
	return o
}

// DTLSConfig configures the coaps listener.
type DTLSConfig struct {
	Listen       string `mapstructure:"listen"`
	PSKFile      string `mapstructure:"psk_file"`
	CertFile     string `mapstructure:"cert_file"`
	KeyFile      string `mapstructure:"key_file"`
	ClientCAFile string `mapstructure:"client_ca_file"`
}

// MQTTConfig selects and configures the MQTT side.
type MQTTConfig struct {
	// Broker is "embedded" or the URL of an existing broker
	// (tcp://, ssl://, tls://, ws://, wss://).
	Broker   string      `mapstructure:"broker"`
	ClientID string      `mapstructure:"client_id"`
	Username string      `mapstructure:"username"`
	Password keys.Secret `mapstructure:"password"` // never logged; Reveal returns it
	// TLS for ssl://, tls://, mqtts:// and wss:// brokers.
	CAFile     string `mapstructure:"ca_file"`
	CertFile   string `mapstructure:"cert_file"`
	KeyFile    string `mapstructure:"key_file"`
	ServerName string `mapstructure:"server_name"`
	// BufferSize bounds the offline buffer (messages) while a remote
	// broker is unreachable; 0 means the default (1000).
	BufferSize int `mapstructure:"buffer_size"`
	// MaxPayload bounds MQTT payloads in bytes; 0 means the default (256 KiB).
	MaxPayload int `mapstructure:"max_payload"`
	// StatusTopic is the retained online/offline topic with Last Will
	// (remote broker); "" means "<client_id>/status", "-" disables it.
	StatusTopic string         `mapstructure:"status_topic"`
	Embedded    EmbeddedConfig `mapstructure:"embedded"`
}

// EmbeddedConfig configures the embedded broker.
type EmbeddedConfig struct {
	Listen    string `mapstructure:"listen"`
	Websocket string `mapstructure:"websocket"`
	AuthFile  string `mapstructure:"auth_file"`
	// PersistenceDir keeps sessions and retained messages across restarts
	// in a bolt database in this folder; "" keeps them in memory.
	PersistenceDir string `mapstructure:"persistence_dir"`
}

// HTTPConfig configures the metrics and health endpoints.
type HTTPConfig struct {
	// Listen is the TCP address serving /metrics, /healthz and /readyz;
	// "" disables it.
	Listen string `mapstructure:"listen"`
	// Console serves the read-only status page at / and its JSON API
	// under /api/ on Listen; nil means true.
	Console *bool `mapstructure:"console"`
}

// ConsoleOn reports whether the status page is served (http.console,
// true unless set false).
func (h HTTPConfig) ConsoleOn() bool { return h.Console == nil || *h.Console }

// LogConfig configures structured logging.
type LogConfig struct {
	Level  string `mapstructure:"level"`  // debug|info|warn|error
	Format string `mapstructure:"format"` // text|json
}

// DefaultRateBlock is coap.rate_block's default.
const DefaultRateBlock = 10 * time.Second

// Defaults returns the built-in configuration: standalone, embedded broker,
// CoAP on :5683, metrics on :9100.
func Defaults() Config {
	return Config{
		Rules: []string{"rules/*.toml"},
		CoAP:  CoAPConfig{Listen: ":5683", RateBlock: DefaultRateBlock},
		MQTT: MQTTConfig{
			Broker:   "embedded",
			ClientID: "coap-bridge",
			Embedded: EmbeddedConfig{Listen: ":1883"},
		},
		HTTP: HTTPConfig{Listen: ":9100"},
		Log:  LogConfig{Level: "info", Format: "text"},
	}
}

// SetDefaults fills the zero-valued keys that must have a value.
func (c *Config) SetDefaults() {
	d := Defaults()
	if c.MQTT.Broker == "" {
		c.MQTT.Broker = d.MQTT.Broker
	}
	if c.MQTT.ClientID == "" {
		c.MQTT.ClientID = d.MQTT.ClientID
	}
	if c.Log.Level == "" {
		c.Log.Level = d.Log.Level
	}
	if c.Log.Format == "" {
		c.Log.Format = d.Log.Format
	}
	c.Cluster.setDefaults()
}

// ConfigError is one problem found in the configuration. Key is the dotted
// config key ("coap.listen").
type ConfigError struct {
	Key string
	Msg string
}

func (e ConfigError) Error() string { return e.Key + ": " + e.Msg }

// ConfigErrors collects every problem found by Validate.
type ConfigErrors []ConfigError

func (es ConfigErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.Is(err, ErrInvalidConfig) match.
func (es ConfigErrors) Unwrap() error { return ErrInvalidConfig }

// validPort reports whether a listen address's port is one net.Listen
// takes: a number 0-65535 or a known service name.
func validPort(port string) bool {
	if n, err := strconv.Atoi(port); err == nil {
		return n >= 0 && n <= 65535
	}
	if _, err := net.LookupPort("udp", port); err == nil {
		return true
	}
	_, err := net.LookupPort("tcp", port)
	return err == nil
}

// setting is a config key (within its section) and its value, for checks
// of keys that are set but not used.
type setting struct{ key, val string }

// minMaxPayload is the smallest mqtt.max_payload taken: a command's result
// alone is a couple of hundred bytes of JSON.
const minMaxPayload = 1024

// Validate checks every key and returns all problems as ConfigErrors, or nil.
func (c *Config) Validate() error {
	var errs ConfigErrors
	add := func(key, format string, args ...any) {
		errs = append(errs, ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	checkAddr := func(key, addr string, allowEmpty bool) {
		if addr == "" {
			if !allowEmpty {
				add(key, "must not be empty")
			}
			return
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			add(key, "not a host:port address: %q", addr)
			return
		}
		if !validPort(port) {
			add(key, "port %q: want 0-65535 or a service name", port)
		}
	}
	for i, g := range c.Rules {
		if strings.TrimSpace(g) == "" {
			add(fmt.Sprintf("rules[%d]", i), "empty rule file pattern")
		}
	}
	checkAddr("coap.listen", c.CoAP.Listen, true)
	checkAddr("coap.dtls.listen", c.CoAP.DTLS.Listen, true)
	if c.CoAP.DTLS.Listen != "" {
		hasPSK := c.CoAP.DTLS.PSKFile != ""
		hasCert := c.CoAP.DTLS.CertFile != "" || c.CoAP.DTLS.KeyFile != ""
		if !hasPSK && !hasCert {
			add("coap.dtls.listen", "DTLS needs psk_file or cert_file and key_file")
		}
	}
	if d := c.CoAP.DTLS; d.Listen == "" {
		for _, f := range []setting{{"psk_file", d.PSKFile}, {"cert_file", d.CertFile}, {"key_file", d.KeyFile}, {"client_ca_file", d.ClientCAFile}} {
			if f.val != "" {
				add("coap.dtls."+f.key, "set, but coap.dtls.listen is empty: no coaps listener uses it (set listen, e.g. \":5684\", or remove it)")
			}
		}
	}
	if (c.CoAP.DTLS.CertFile == "") != (c.CoAP.DTLS.KeyFile == "") {
		add("coap.dtls.cert_file", "cert_file and key_file go together")
	}
	if c.CoAP.RateLimit < 0 {
		add("coap.rate_limit", "must not be negative (requests/s per source address; 0 turns the limit off), got %v", c.CoAP.RateLimit)
	}
	if c.CoAP.RateBurst < 0 {
		add("coap.rate_burst", "must not be negative (0 means rate_limit), got %d", c.CoAP.RateBurst)
	}
	if c.CoAP.RateBurst > 0 && c.CoAP.RateLimit == 0 {
		add("coap.rate_burst", "set, but coap.rate_limit is 0 (off): set rate_limit too, or remove rate_burst")
	}
	if c.CoAP.RateBlock < 0 {
		add("coap.rate_block", "must not be negative (0 turns blocking off), got %v", c.CoAP.RateBlock)
	}
	c.CoAP.Limits.validate(add)
	c.Devices.validate(add)
	if d := c.State.Dir; d != "" {
		if err := checkStateDir(d); err != nil {
			add("state.dir", "%v", err)
		}
	}
	c.Catalog.validate(add)
	c.Metrics.validate(add)
	c.Proxy.validate(add)
	tlsOnly := []setting{{"ca_file", c.MQTT.CAFile}, {"cert_file", c.MQTT.CertFile}, {"key_file", c.MQTT.KeyFile}, {"server_name", c.MQTT.ServerName}}
	switch b := c.MQTT.Broker; {
	case b == "embedded":
		checkAddr("mqtt.embedded.listen", c.MQTT.Embedded.Listen, true)
		checkAddr("mqtt.embedded.websocket", c.MQTT.Embedded.Websocket, true)
		status := c.MQTT.StatusTopic
		if status == "-" {
			status = ""
		}
		remoteOnly := append(tlsOnly, setting{"username", c.MQTT.Username}, setting{"password", c.MQTT.Password.Reveal()}, setting{"status_topic", status})
		for _, f := range remoteOnly {
			if f.val != "" {
				add("mqtt."+f.key, "set, but mqtt.broker is \"embedded\": it applies to a remote broker only (the bridge reaches its embedded broker in-process; the embedded broker's users go in mqtt.embedded.auth_file)")
			}
		}
	default:
		e := c.MQTT.Embedded
		for _, f := range []setting{{"auth_file", e.AuthFile}, {"websocket", e.Websocket}, {"persistence_dir", e.PersistenceDir}} {
			if f.val != "" {
				add("mqtt.embedded."+f.key, "set, but mqtt.broker is a remote broker: the embedded broker does not run")
			}
		}
		u, err := mqttside.ParseBrokerURL(b)
		if err == nil && !mqttside.IsTLSScheme(u.Scheme) {
			for _, f := range tlsOnly {
				if f.val != "" {
					add("mqtt."+f.key, "set, but %s:// is not TLS, so this is not used (ssl://, tls://, mqtts:// and wss:// brokers use it)", u.Scheme)
				}
			}
		}
		switch {
		case errors.Is(err, mqttside.ErrBrokerScheme) && strings.Contains(b, "://"):
			u, _ := url.Parse(b)
			add("mqtt.broker", "unsupported scheme %q (want tcp, mqtt, ssl, tls, mqtts, ws or wss)", u.Scheme)
		case err != nil:
			add("mqtt.broker", "must be \"embedded\" or a broker URL like tcp://host:1883, got %q (%v)", b, err)
		}
	}
	if c.MQTT.BufferSize < 0 {
		add("mqtt.buffer_size", "must not be negative")
	}
	switch p := c.MQTT.MaxPayload; {
	case p < 0:
		add("mqtt.max_payload", "must not be negative")
	case p > 0 && p < minMaxPayload:
		add("mqtt.max_payload", "%d bytes is too small to carry a command result or a presence document; at least %d (0 = 262144)", p, minMaxPayload)
	}
	if (c.MQTT.CertFile == "") != (c.MQTT.KeyFile == "") {
		add("mqtt.cert_file", "cert_file and key_file go together")
	}
	if c.MQTT.ClientID == "" {
		add("mqtt.client_id", "must not be empty")
	}
	c.Cluster.validate(c.MQTT, add)
	checkAddr("http.listen", c.HTTP.Listen, true)
	if _, err := ParseLevel(c.Log.Level); err != nil {
		add("log.level", "%v", err)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "want text or json, got %q", c.Log.Format)
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// ParseLevel maps a level name to a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown level %q (want debug, info, warn or error)", s)
}
