package bridge

import (
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// deviceOverflow is the device label of every device beyond
// metrics.per_device_max.
const deviceOverflow = "_overflow"

// DefaultPerDeviceMax is metrics.per_device_max when it is 0.
const DefaultPerDeviceMax = 1000

// deviceMetrics are the per-device metrics (metrics.per_device). A device
// name can come from a request on plain UDP, so the label values are
// bounded: the first max distinct names get their own series and every
// later name is counted under device="_overflow". A name keeps its series
// until the bridge restarts (at most max+1 series per family).
//
// A nil *deviceMetrics counts nothing: the feature off costs a nil check.
type deviceMetrics struct {
	messages *prometheus.CounterVec // device, direction
	errors   *prometheus.CounterVec // device, reason
	lastSeen *prometheus.GaugeVec   // device
	overflow prometheus.Counter
	max      int
	log      *slog.Logger

	mu     sync.RWMutex
	series map[string]*deviceSeries // admitted names, and deviceOverflow
	// over remembers overflowed names, so each is counted once in
	// overflow; it is cleared when it holds max names, so its memory is
	// bounded too (a name seen again after that is counted again).
	over   map[string]struct{}
	warned bool
}

// deviceSeries are one device label value's series of the hot path. The
// last-seen gauge is made on the first message: a device known only by
// its errors (a command for an unknown name) has none.
type deviceSeries struct {
	label    string
	toMQTT   prometheus.Counter
	toCoAP   prometheus.Counter
	seenOnce sync.Once
	lastSeen prometheus.Gauge
}

// newDeviceMetrics registers the per-device metrics with at most max
// device label values besides "_overflow" (0 means DefaultPerDeviceMax).
func newDeviceMetrics(reg prometheus.Registerer, limit int, log *slog.Logger) *deviceMetrics {
	if limit <= 0 {
		limit = DefaultPerDeviceMax
	}
	d := &deviceMetrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_device_messages_total",
			Help: "Messages carried for each device, by direction (metrics.per_device; devices beyond metrics.per_device_max are counted as device=\"_overflow\").",
		}, []string{"device", "direction"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_device_errors_total",
			Help: "Rule errors for each device, by reason (metrics.per_device; devices beyond metrics.per_device_max are counted as device=\"_overflow\").",
		}, []string{"device", "reason"}),
		lastSeen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bridge_device_last_seen_timestamp_seconds",
			Help: "Unix time of each device's latest message carried (metrics.per_device).",
		}, []string{"device"}),
		overflow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bridge_device_metrics_overflow_total",
			Help: "Device names counted as device=\"_overflow\" because metrics.per_device_max names had their own series.",
		}),
		max:    limit,
		log:    log,
		series: make(map[string]*deviceSeries),
		over:   make(map[string]struct{}),
	}
	reg.MustRegister(d.messages, d.errors, d.lastSeen, d.overflow)
	return d
}

// of returns the series of device: its own, or those of "_overflow" once
// max names have theirs. A name that is not UTF-8 (a Uri-Path option may
// hold any bytes), which Prometheus refuses as a label value, is counted
// with U+FFFD in place of its bad bytes.
func (d *deviceMetrics) of(device string) *deviceSeries {
	if !utf8.ValidString(device) {
		device = strings.ToValidUTF8(device, "\uFFFD")
	}
	d.mu.RLock()
	s := d.series[device]
	if s == nil {
		if _, ok := d.over[device]; ok {
			s = d.series[deviceOverflow]
		}
	}
	d.mu.RUnlock()
	if s != nil {
		return s
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.series[device]; s != nil {
		return s
	}
	ov := d.series[deviceOverflow]
	admitted := len(d.series)
	if ov != nil {
		admitted--
	}
	if admitted < d.max {
		s = d.newSeries(device)
		d.series[device] = s
		return s
	}
	if ov == nil {
		ov = d.newSeries(deviceOverflow)
		d.series[deviceOverflow] = ov
	}
	if _, ok := d.over[device]; !ok {
		if len(d.over) >= d.max {
			clear(d.over)
		}
		d.over[device] = struct{}{}
		d.overflow.Inc()
		if !d.warned {
			d.warned = true
			d.log.Warn("per-device metrics full: further devices are counted as device=\"_overflow\"", "limit", d.max, "device", device)
		}
	}
	return ov
}

func (d *deviceMetrics) newSeries(label string) *deviceSeries {
	// The caller's string may share a larger buffer.
	label = strings.Clone(label)
	return &deviceSeries{
		label:  label,
		toMQTT: d.messages.WithLabelValues(label, dirCoAPToMQTT),
		toCoAP: d.messages.WithLabelValues(label, dirMQTTToCoAP),
	}
}

// message counts a message of device carried in direction at now.
func (d *deviceMetrics) message(device, direction string, now time.Time) {
	if d == nil || device == "" {
		return
	}
	s := d.of(device)
	if direction == dirMQTTToCoAP {
		s.toCoAP.Inc()
	} else {
		s.toMQTT.Inc()
	}
	s.seenOnce.Do(func() { s.lastSeen = d.lastSeen.WithLabelValues(s.label) })
	s.lastSeen.Set(float64(now.UnixNano()) / 1e9)
}

// failed counts a rule error of device for reason.
func (d *deviceMetrics) failed(device, reason string) {
	if d == nil || device == "" {
		return
	}
	d.errors.WithLabelValues(d.of(device).label, reason).Inc()
}
