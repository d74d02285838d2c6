package bridge

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Directions label the way a message crosses the bridge.
const (
	dirCoAPToMQTT = "coap_to_mqtt"
	dirMQTTToCoAP = "mqtt_to_coap"
	dirProxy      = "proxy" // a CoAP or HTTP client's request answered by a proxy rule
)

// Error reasons (the "reason" label of bridge_rule_errors_total).
const (
	reasonConvert         = "convert"
	reasonExpr            = "expression"
	reasonEscape          = "escape"
	reasonPublish         = "publish"
	reasonPublishTimeout  = "publish_timeout"
	reasonBufferFull      = "buffer_full"
	reasonIdentity        = "identity"
	reasonTimeout         = "timeout"
	reasonUnreachable     = "unreachable"
	reasonCoAP            = "coap"
	reasonUnknownDevice   = "unknown_device"
	reasonQueueFull       = "queue_full"
	reasonExpired         = "expired"
	reasonNoRoute         = "no_route"
	reasonMethod          = "method_not_allowed"
	reasonObservationLost = "observation_lost"
	reasonTooLarge        = "too_large"
	reasonState           = "state"
	reasonNotAcceptable   = "not_acceptable"
	reasonPrecondition    = "precondition_failed"
	reasonRetained        = "retained"
)

// metrics are the bridge's Prometheus collectors, labelled per rule.
type metrics struct {
	messages     *prometheus.CounterVec   // rule, direction
	filtered     *prometheus.CounterVec   // rule
	buffered     *prometheus.CounterVec   // rule
	errors       *prometheus.CounterVec   // rule, reason; count with ruleError
	latency      *prometheus.HistogramVec // rule, direction
	observations prometheus.Gauge
	observers    prometheus.GaugeFunc // registered once the observe server exists
	queueDepth   prometheus.Gauge
	backpressure prometheus.Counter
	reloads      *prometheus.CounterVec // result
	rulesLoaded  prometheus.Gauge
	staleDropped *prometheus.CounterVec // device
	recent       *recentErrors          // the latest errors, for the console
	devices      *deviceMetrics         // nil unless metrics.per_device
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		recent: newRecentErrors(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_rule_messages_total",
			Help: "Messages carried across the bridge, per rule and direction.",
		}, []string{"rule", "direction"}),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_rule_filtered_total",
			Help: "Messages dropped because a rule's where expression was false.",
		}, []string{"rule"}),
		buffered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_rule_buffered_total",
			Help: "Messages accepted into the MQTT offline buffer while the broker was unreachable; delivered on reconnect.",
		}, []string{"rule"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_rule_errors_total",
			Help: "Messages a rule could not carry, by reason.",
		}, []string{"rule", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bridge_rule_latency_seconds",
			Help:    "Time from receiving a message on one side to its acceptance on the other.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"rule", "direction"}),
		observations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_observations_active",
			Help: "Observations the bridge holds on device resources.",
		}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_command_queue_depth",
			Help: "Commands queued for offline devices.",
		}),
		backpressure: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bridge_command_backpressure_total",
			Help: "Command deliveries that waited because every command worker was busy.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_reloads_total",
			Help: "Rule reloads, by result (ok, error, refused).",
		}, []string{"result"}),
		rulesLoaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_rules_loaded",
			Help: "Rules in the running rule set.",
		}),
	}
	m.staleDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridge_observe_stale_dropped_total",
		Help: "Notifications from observed devices dropped because they were not newer than the latest one (RFC 7641 §3.4).",
	}, []string{"device"})
	reg.MustRegister(m.messages, m.filtered, m.buffered, m.errors, m.latency, m.observations,
		m.queueDepth, m.backpressure, m.reloads, m.rulesLoaded)
	reg.MustRegister(m.staleDropped)
	return m
}
