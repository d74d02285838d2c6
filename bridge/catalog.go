package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
)

// maxCatalogEntries bounds the resources of one catalog document; a device
// listing more gets a document with the first ones and "truncated": true.
const maxCatalogEntries = 1024

// catalogDoc is the retained document describing what a device offers:
// its /.well-known/core (RFC 6690) as JSON.
type catalogDoc struct {
	Device    string         `json:"device"`
	ReadAt    string         `json:"read_at"`
	Resources []catalogEntry `json:"resources"`
	// Truncated tells that the device listed more than the document holds
	// (maxCatalogEntries, or the MQTT payload limit).
	Truncated bool `json:"truncated,omitempty"`
}

// catalogEntry is one link of /.well-known/core: its target and the
// attributes of RFC 6690 §3 and RFC 7641 §6 that it carries. Multi-valued
// attributes are lists; absent ones are left out.
type catalogEntry struct {
	Path string   `json:"path"`
	RT   []string `json:"rt,omitempty"`
	If   []string `json:"if,omitempty"`
	CT   []uint16 `json:"ct,omitempty"`
	Obs  bool     `json:"obs,omitempty"`
	Size uint32   `json:"sz,omitempty"`
}

// catalogEntryOf maps a link to a catalog entry. ok is false for a link
// to another host, which is not the device's resource. A ct or sz that is
// not a number (RFC 6690 §2 cardinal) is left out, with the link's other
// attributes kept.
func catalogEntryOf(l linkformat.Link) (catalogEntry, bool) {
	u, err := url.Parse(l.Target)
	if err != nil || u.Path == "" || u.Host != "" {
		return catalogEntry{}, false
	}
	r, err := linkformat.ResourceFromLink(l)
	if err != nil {
		r, _ = linkformat.ResourceFromLink(linkformat.Link{Target: l.Target, Params: withoutNumbers(l.Params)})
	}
	return catalogEntry{
		Path: u.Path,
		RT:   r.ResourceTypes,
		If:   r.Interfaces,
		CT:   r.ContentFormats,
		Obs:  r.Observable,
		Size: r.Size,
	}, true
}

// withoutNumbers returns ps without its ct and sz parameters.
func withoutNumbers(ps []linkformat.Param) []linkformat.Param {
	out := make([]linkformat.Param, 0, len(ps))
	for _, p := range ps {
		if !strings.EqualFold(p.Name, "ct") && !strings.EqualFold(p.Name, "sz") {
			out = append(out, p)
		}
	}
	return out
}

// buildCatalog builds the document of device from the links it listed,
// keeping at most maxCatalogEntries resources and a payload of at most
// maxBytes; whatever does not fit is dropped and the document says
// "truncated". It returns the payload and a digest of everything but the
// reading time, which tells whether the content changed since the last
// document.
func buildCatalog(device string, links []linkformat.Link, readAt time.Time, maxBytes int) ([]byte, [sha256.Size]byte) {
	doc := catalogDoc{Device: device, ReadAt: readAt.UTC().Format(presenceTimeFormat), Resources: []catalogEntry{}}
	// The document around its entries: names, the device, the time and
	// the truncated flag, with room to spare.
	size := 128 + 2*len(device)
	for _, l := range links {
		e, ok := catalogEntryOf(l)
		if !ok {
			continue
		}
		if len(doc.Resources) == maxCatalogEntries {
			doc.Truncated = true
			break
		}
		b, err := json.Marshal(e)
		if err != nil || size+len(b)+1 > maxBytes {
			doc.Truncated = true
			break
		}
		size += len(b) + 1
		doc.Resources = append(doc.Resources, e)
	}
	payload, _ := json.Marshal(doc) // strings, numbers and bools always marshal
	content := doc
	content.ReadAt = ""
	body, _ := json.Marshal(content)
	return payload, sha256.Sum256(body)
}

// catalogs publishes devices' catalog documents: retained, QoS 1, and
// only when the content differs from the document last handed to MQTT on
// the same topic, so a rediscovery that finds nothing new costs no
// publish. After the MQTT connection comes back every topic is published
// again on its next read, in case the broker lost what it retained.
type catalogs struct {
	pub       publisher
	log       *slog.Logger
	maxBytes  int
	handover  time.Duration
	publishes *prometheus.CounterVec // result

	mu   sync.Mutex
	last map[string][sha256.Size]byte // topic -> content of the latest document
	// topics is every topic this bridge left a document on, with its
	// device, so that the document is cleared when the device goes.
	topics map[string]string
}

// Results of a catalog publish (the result label of
// bridge_catalog_publishes_total).
const (
	catalogPublished = "published"
	catalogBuffered  = "buffered"
	catalogUnchanged = "unchanged"
	catalogRefused   = "refused"
	catalogFailed    = "failed"
)

func newCatalogs(pub publisher, maxBytes int, handover time.Duration, reg prometheus.Registerer, log *slog.Logger) *catalogs {
	c := &catalogs{
		pub: pub, log: log, maxBytes: maxBytes, handover: handover,
		last: map[string][sha256.Size]byte{}, topics: map[string]string{},
	}
	c.publishes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridge_catalog_publishes_total",
		Help: "Device catalog documents (a device's /.well-known/core as retained JSON), by result: published (acknowledged), buffered (held for the broker, delivered on reconnect), unchanged (the read found the content last published: not published again), refused (an invalid topic or a payload too large: never published), failed (not taken now; the next read publishes it).",
	}, []string{"result"})
	for _, r := range []string{catalogPublished, catalogBuffered, catalogUnchanged, catalogRefused, catalogFailed} {
		c.publishes.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(c.publishes)
	}
	return c
}

// publish publishes the catalog of device, read from its
// /.well-known/core just now, on topic (a {device} template).
func (c *catalogs) publish(ctx context.Context, topic rules.Pattern, device string, links []linkformat.Link) {
	t, err := topic.Render(rules.Captures{{Name: "device", Value: device}})
	if err != nil {
		c.publishes.WithLabelValues(catalogRefused).Inc()
		c.log.Warn("catalog not published: the device name cannot be a topic level", "device", device, "err", err)
		return
	}
	payload, sum := buildCatalog(device, links, time.Now(), c.maxBytes)
	c.mu.Lock()
	same := c.last[t] == sum
	c.mu.Unlock()
	if same {
		c.publishes.WithLabelValues(catalogUnchanged).Inc()
		return
	}
	m := mqttside.Message{Topic: t, Payload: payload, QoS: 1, Retain: true, ContentType: "application/json"}
	hctx, cancel := context.WithTimeout(ctx, c.handover)
	err = c.pub.Publish(hctx, m)
	cancel()
	result := catalogPublished
	switch {
	case err == nil:
	case errors.Is(err, mqttside.ErrPending):
		result = catalogBuffered
	case errors.Is(err, mqttside.ErrInvalidTopic), errors.Is(err, mqttside.ErrPayloadTooLarge):
		c.publishes.WithLabelValues(catalogRefused).Inc()
		c.log.Warn("catalog not published", "device", device, "topic", t, "err", err)
		return
	default:
		c.publishes.WithLabelValues(catalogFailed).Inc()
		c.log.Debug("catalog not published: the next read tries again", "device", device, "topic", t, "err", err)
		return
	}
	c.mu.Lock()
	c.last[t] = sum
	if c.topics[t] != device {
		c.topics[t] = strings.Clone(device)
	}
	c.mu.Unlock()
	c.publishes.WithLabelValues(result).Inc()
	c.log.Debug("catalog published", "device", device, "topic", t, "resources_listed", len(links))
}

// prune clears the documents of devices that known no longer reports
// (a reload removed them from the rules and they are not learned): an
// empty retained message on each of their topics. It returns how many
// documents it cleared.
func (c *catalogs) prune(ctx context.Context, known func(device string) bool) int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	var gone []string
	for t, d := range c.topics {
		if !known(d) {
			gone = append(gone, t)
			delete(c.topics, t)
			delete(c.last, t)
		}
	}
	c.mu.Unlock()
	for _, t := range gone {
		hctx, cancel := context.WithTimeout(ctx, c.handover)
		err := c.pub.Publish(hctx, mqttside.Message{Topic: t, QoS: 1, Retain: true})
		cancel()
		if err != nil && !errors.Is(err, mqttside.ErrPending) {
			c.log.Warn("catalog of a removed device not cleared", "topic", t, "err", err)
		}
	}
	return len(gone)
}

// forget drops what was published, so that every catalog is published
// again on its next read (the MQTT connection came back: a broker that
// restarted may have lost its retained messages).
func (c *catalogs) forget() {
	if c == nil {
		return
	}
	c.mu.Lock()
	clear(c.last)
	c.mu.Unlock()
}
