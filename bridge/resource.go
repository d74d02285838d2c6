package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
)

// lastValue is the latest message seen on a topic a resource rule serves.
type lastValue struct {
	payload     []byte
	contentType string
	received    time.Time
}

// resourceCache keeps the latest message per topic for resource rules,
// bounded in entries: when full, the least recently updated topic is evicted
// (and counted).
type resourceCache struct {
	mu      sync.Mutex
	max     int
	values  map[string]*lastValue
	evicted uint64
}

func newResourceCache(max int) *resourceCache {
	return &resourceCache{max: max, values: map[string]*lastValue{}}
}

// store keeps a message from a resource rule's subscription.
func (c *resourceCache) store(d *mqttside.Delivery) {
	v := &lastValue{payload: append([]byte(nil), d.Payload...), contentType: d.ContentType, received: d.Received}
	c.mu.Lock()
	if _, ok := c.values[d.Topic]; !ok && len(c.values) >= c.max {
		c.evictOldestLocked()
	}
	c.values[d.Topic] = v
	c.mu.Unlock()
}

func (c *resourceCache) evictOldestLocked() {
	var oldest string
	var at time.Time
	for t, v := range c.values {
		if oldest == "" || v.received.Before(at) {
			oldest, at = t, v.received
		}
	}
	delete(c.values, oldest)
	c.evicted++
}

// remove forgets the value on topic.
func (c *resourceCache) remove(topic string) {
	c.mu.Lock()
	delete(c.values, topic)
	c.mu.Unlock()
}

// get returns the latest value on topic.
func (c *resourceCache) get(topic string) (*lastValue, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.values[topic]
	return v, ok
}

// topics returns the topics that hold a value.
func (c *resourceCache) topics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.values))
	for t := range c.values {
		out = append(out, t)
	}
	return out
}

// resources runs resource rules: it keeps the latest MQTT message on the
// topics they read, answers GETs on their paths (observable, RFC 7641),
// lists them in /.well-known/core and notifies their CoAP observers when a
// new message arrives.
type resources struct {
	set        *atomic.Pointer[rules.Set]
	subs       *subscribed // the filters subscribed to (see keep)
	cache      *resourceCache
	obs        *coapside.ObserveServer
	metrics    *metrics
	log        *slog.Logger
	maxAge     uint32 // Max-Age of the responses (Options.ResourceMaxAge)
	maxPayload int    // largest MQTT payload kept (mqtt.max_payload)
	run        runState
}

func newResources(set *atomic.Pointer[rules.Set], subs *subscribed, m *metrics, log *slog.Logger, opts Options, maxPayload int, lim LimitsConfig) (*resources, error) {
	lim = lim.withDefaults()
	obs, err := coapside.NewObserveServer(coapside.ObserveOptions{Logger: log, MaxAge: opts.ResourceMaxAge,
		MaxObservers: lim.Observers, MaxObserversPerSource: lim.ObserversPerSource, CheckInterval: lim.ObserveCheck})
	if err != nil {
		return nil, err
	}
	return &resources{
		set:        set,
		subs:       subs,
		cache:      newResourceCache(opts.ResourceCacheSize),
		obs:        obs,
		metrics:    m,
		log:        log,
		maxAge:     opts.ResourceMaxAge,
		maxPayload: maxPayload,
	}, nil
}

// Run sends the notifications to observers until Shutdown.
func (rs *resources) Run(ctx context.Context) error {
	ctx, ok := rs.run.begin(ctx)
	if !ok {
		return nil
	}
	defer rs.run.end()
	_ = rs.obs.Run(ctx) // returns ctx's error when it ends
	return nil
}

// Shutdown stops sending notifications.
func (rs *resources) Shutdown(ctx context.Context) error { return rs.run.stop(ctx) }

// keep stores a message delivered on a resource rule's subscription (an
// empty one clears the topic's value) and notifies the observers of the
// paths it feeds. A topic matching several
// resource rules' filters (config/+ and config/#) arrives once per filter:
// only the copy on the first matching rule's filter that is subscribed is
// kept, so observers hear of each message once.
func (rs *resources) keep(d *mqttside.Delivery) {
	matches := rs.set.Load().MatchResources(d.Topic)
	filters := make([]string, len(matches))
	for i, m := range matches {
		filters[i] = m.Rule.Topic.Filter()
	}
	if !rs.subs.handles(d.Filter, filters...) {
		rs.log.Debug("mqtt message delivered on another resource filter too", "topic", d.Topic, "filter", d.Filter)
		return
	}
	if len(d.Payload) > rs.maxPayload {
		// A remote broker delivers whatever it accepted.
		rs.metrics.ruleError("", reasonTooLarge, errorDetail{errText: "payload too large for resource rules"})
		rs.log.Warn("mqtt message not kept for resource rules: payload too large",
			"topic", d.Topic, "bytes", len(d.Payload), "limit", rs.maxPayload)
		return
	}
	if len(d.Payload) == 0 {
		// An empty message deletes a retained one: the topic has no
		// value now, as after a restart. Its observers are told 4.04.
		rs.cache.remove(d.Topic)
	} else {
		rs.cache.store(d)
	}
	rs.notifyObservers(matches)
}

// serve answers a request routed to a resource rule: observable, with the
// latest message on the rule's topic.
func (rs *resources) serve(w coapside.ResponseWriter, r *coapside.Request, rule *rules.Resource, caps rules.Captures) {
	rs.obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		rs.serveResource(w, r, rule, caps)
	})).ServeCOAP(w, r)
}

// serveResource answers a GET on a resource rule with the latest message on
// its topic (4.04 before the first), with Max-Age.
func (rs *resources) serveResource(w coapside.ResponseWriter, r *coapside.Request, rule *rules.Resource, caps rules.Captures) {
	topic, err := readTopic(rule, r.Method, caps)
	if err != nil {
		if reason := outcomeReason(err); reason != "" {
			rs.metrics.ruleError(rule.Name, reason, errorDetail{code: codeOf(err), err: err})
		}
		w.SetCode(codeOf(err))
		return
	}
	v, ok := rs.cache.get(topic)
	if !ok {
		w.SetCode(message.NotFound)
		return
	}
	format, known := rs.format(rule, v)
	if want, ok := r.Options.Accept(); ok && (!known || want != format) {
		// RFC 7252 §5.10.4: the preferred format cannot be returned.
		err := fmt.Errorf("accept %v: the value on %s is %s", want, topic, formatName(format, known))
		rs.metrics.ruleError(rule.Name, reasonNotAcceptable, errorDetail{code: message.NotAcceptable, err: err})
		w.SetCode(message.NotAcceptable)
		return
	}
	w.SetCode(message.Content)
	o := w.Options()
	*o = o.SetUint(message.MaxAge, rs.maxAge)
	if known {
		w.SetContentFormat(format)
	}
	w.Write(v.payload)
	rs.metrics.messages.WithLabelValues(rule.Name, dirMQTTToCoAP).Inc()
}

// format is the Content-Format a resource rule serves v in: the rule's
// content_format, else the MQTT 5 content type v came with; known is
// false when neither says.
func (rs *resources) format(rule *rules.Resource, v *lastValue) (message.MediaType, bool) {
	switch {
	case rule.ContentFormat != nil:
		return message.MediaType(*rule.ContentFormat), true
	case v.contentType != "":
		return message.ParseMediaType(v.contentType)
	}
	return 0, false
}

// formatName names a Content-Format for a diagnostic.
func formatName(f message.MediaType, known bool) string {
	if !known {
		return "of no known Content-Format"
	}
	return f.String()
}

// notifyObservers tells the CoAP observers of every resource path fed by
// the matched rules that a new message arrived (RFC 7641 §4.2).
func (rs *resources) notifyObservers(matches []rules.ResourceMatch) {
	for _, m := range matches {
		segs, err := m.Rule.Path.RenderSegments(m.Captures)
		if err != nil {
			rs.metrics.ruleError(m.Rule.Name, reasonEscape, errorDetail{err: err})
			continue
		}
		var o message.Options
		for _, s := range segs {
			o = o.AddString(message.URIPath, s)
		}
		rs.obs.Notify(o.Path())
	}
}
