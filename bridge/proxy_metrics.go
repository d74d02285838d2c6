package bridge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coap-mqtt/bridge/coapside/cache"
)

// How the proxy answered a request (bridge_proxy_requests_total's result).
const (
	resultCached      = "cache"       // a fresh cache entry; the device was not asked
	resultRevalidated = "revalidated" // a stale entry the device confirmed (2.03)
	resultDevice      = "device"      // the device's answer
	resultStale       = "stale"       // a stale entry: the device could not be asked
	resultRefused     = "refused"     // an error: asleep, unreachable, no answer
)

// reasonAsleep counts a proxy request for a sleeping device that the
// cache could not answer.
const reasonAsleep = "asleep"

// proxyMetrics are the proxy's collectors; errors go to the rules' own
// counters (bridge_rule_errors_total).
type proxyMetrics struct {
	rules          *metrics
	requests       *prometheus.CounterVec // rule, result
	deviceRequests *prometheus.CounterVec // rule
	deviceSeconds  prometheus.Histogram
	upstream       prometheus.Gauge
}

func newProxyMetrics(reg prometheus.Registerer, m *metrics, c *cache.Cache) *proxyMetrics {
	pm := &proxyMetrics{
		rules: m,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_proxy_requests_total",
			Help: "Requests answered by proxy rules, by how: cache, revalidated, device, stale or refused.",
		}, []string{"rule", "result"}),
		deviceRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_proxy_device_requests_total",
			Help: "Requests and observation registrations proxy rules sent to devices.",
		}, []string{"rule"}),
		deviceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bridge_proxy_device_seconds",
			Help:    "Time a device took to answer a proxied request.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		upstream: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_proxy_upstream_observations",
			Help: "Observations of device resources the proxy holds for the clients observing them through it.",
		}),
	}
	reg.MustRegister(pm.requests, pm.deviceRequests, pm.deviceSeconds, pm.upstream)
	counter := func(name, help string, v func(cache.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(c.Stats())) }))
	}
	counter("bridge_proxy_cache_hits_total", "Cache lookups that found a fresh response.", func(s cache.Stats) uint64 { return s.Hits })
	counter("bridge_proxy_cache_stale_hits_total", "Cache lookups that found a response past its Max-Age.", func(s cache.Stats) uint64 { return s.StaleHits })
	counter("bridge_proxy_cache_misses_total", "Cache lookups that found nothing.", func(s cache.Stats) uint64 { return s.Misses })
	counter("bridge_proxy_cache_evictions_total", "Responses evicted to keep the cache within proxy.cache_entries and proxy.cache_bytes.", func(s cache.Stats) uint64 { return s.Evictions })
	counter("bridge_proxy_cache_too_large_total", "Responses not cached because they were too large.", func(s cache.Stats) uint64 { return s.TooLarge })
	counter("bridge_proxy_cache_revalidations_total", "Stale responses made fresh again by a device's 2.03 Valid.", func(s cache.Stats) uint64 { return s.Revalidations })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bridge_proxy_cache_entries", Help: "Responses in the proxy cache."},
		func() float64 { return float64(c.Stats().Entries) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bridge_proxy_cache_bytes", Help: "Bytes the proxy cache holds."},
		func() float64 { return float64(c.Stats().Bytes) }))
	return pm
}

// result counts one answered request; an answer (not a refusal) is one
// of the rule's messages.
func (m *proxyMetrics) result(rule, result string) {
	m.requests.WithLabelValues(rule, result).Inc()
	if result != resultRefused {
		m.rules.messages.WithLabelValues(rule, dirProxy).Inc()
	}
}
