package bridge

import (
	"sync"
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

// serveResource answers a GET on a resource rule with the latest message on
// its topic (4.04 before the first), with Max-Age.
func (b *Bridge) serveResource(w coapside.ResponseWriter, r *coapside.Request, rule *rules.Resource, caps rules.Captures) {
	if r.Method != message.GET {
		w.SetCode(message.MethodNotAllowed)
		return
	}
	topic, err := rule.Topic.Render(caps)
	if err != nil {
		b.metrics.errors.WithLabelValues(rule.Name, reasonEscape).Inc()
		w.SetCode(message.BadRequest)
		return
	}
	v, ok := b.resources.get(topic)
	if !ok {
		w.SetCode(message.NotFound)
		return
	}
	w.SetCode(message.Content)
	o := w.Options()
	*o = o.SetUint(message.MaxAge, b.opts.ResourceMaxAge)
	switch {
	case rule.ContentFormat != nil:
		w.SetContentFormat(message.MediaType(*rule.ContentFormat))
	case v.contentType != "":
		if mt, ok := message.ParseMediaType(v.contentType); ok {
			w.SetContentFormat(mt)
		}
	}
	w.Write(v.payload)
	b.metrics.messages.WithLabelValues(rule.Name, dirMQTTToCoAP).Inc()
}

// notifyObservers tells the CoAP observers of every resource path fed by
// topic that a new message arrived (RFC 7641 §4.2).
func (b *Bridge) notifyObservers(topic string) {
	for _, m := range b.set.Load().MatchResources(topic) {
		segs, err := m.Rule.Path.RenderSegments(m.Captures)
		if err != nil {
			b.metrics.errors.WithLabelValues(m.Rule.Name, reasonEscape).Inc()
			continue
		}
		var o message.Options
		for _, s := range segs {
			o = o.AddString(message.URIPath, s)
		}
		b.obs.Notify(o.Path())
	}
}
