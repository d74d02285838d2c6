package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
)

// presenceDoc is the retained document published for a device.
type presenceDoc struct {
	State    string `json:"state"`
	LastSeen string `json:"last_seen,omitempty"`
	Address  string `json:"address,omitempty"`
	Via      string `json:"via,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// presencePublishers is how many documents are handed to MQTT at once: a
// broker that is slow to acknowledge does not hold up every device.
const presencePublishers = 4

// presenceHandover bounds waiting for the broker's acknowledgement of one
// document: a document still unacknowledged then is in the MQTT client or
// its offline buffer, and delivered on reconnect.
const presenceHandover = 200 * time.Millisecond

// publisher publishes queued documents until Shutdown, then what is
// still queued until Shutdown's ctx ends.
func (p *presence) publisher() {
	defer p.wg.Done()
	for {
		e, doc, ok := p.take()
		if !ok {
			select {
			case <-p.ctx.Done():
				return // queue empty, or flush ended
			case <-p.queued:
			}
			continue
		}
		p.publish(e, doc)
	}
}

// take removes the next device from the queue and renders its document.
// At shutdown it reports false once the flush's time is up.
func (p *presence) take() (*presenceEntry, presenceDoc, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 || (p.closed && p.flush.Err() != nil) {
		return nil, presenceDoc{}, false
	}
	e := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	if len(p.queue) == 0 {
		p.queue = nil // let the backing array go after a burst
	} else {
		select { // another publisher takes the next one
		case p.queued <- struct{}{}:
		default:
		}
	}
	e.dirty = false
	if e.removed {
		return e, presenceDoc{}, true // cleared: see publish
	}
	doc := presenceDoc{State: e.state.String(), Reason: e.reason}
	if e.seen != 0 {
		doc.LastSeen = time.Unix(0, e.seen).UTC().Format(presenceTimeFormat)
	}
	return e, doc, true
}

// presenceTimeFormat is RFC 3339 with milliseconds.
const presenceTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// publish hands one document to MQTT: retained, QoS 1, through the
// bridge's client and its offline buffer. A document the client refuses
// for now (a full offline buffer) goes back in the queue, after a pause.
func (p *presence) publish(e *presenceEntry, doc presenceDoc) {
	if addr, via, ok := p.locate(e.name); ok {
		doc.Address = addr
		if via != 0 {
			doc.Via = via.String()
		}
	}
	topic, err := p.topic.Render(rules.Captures{{Name: "device", Value: e.name}})
	if err != nil {
		// A name that cannot stand as a topic level: never published.
		p.log.Warn("presence not published: the device name cannot be a topic level", "device", e.name, "err", err)
		p.dropCleared(e)
		return
	}
	var payload []byte
	if doc.State != "" {
		if payload, err = json.Marshal(doc); err != nil {
			return // a struct of strings always marshals
		}
	} // else the device was removed: an empty retained message clears its document
	m := mqttside.Message{Topic: topic, Payload: payload, QoS: 1, Retain: true, ContentType: "application/json"}
	ctx, cancel := context.WithTimeout(p.flushContext(), presenceHandover)
	err = p.pub.Publish(ctx, m)
	cancel()
	switch {
	case err == nil:
		p.publishes.WithLabelValues("published").Inc()
		p.dropCleared(e)
	case errors.Is(err, mqttside.ErrPending):
		p.publishes.WithLabelValues("buffered").Inc()
		p.dropCleared(e)
	case errors.Is(err, mqttside.ErrInvalidTopic), errors.Is(err, mqttside.ErrPayloadTooLarge):
		// The broker would never take it: retrying cannot help.
		p.publishes.WithLabelValues("refused").Inc()
		p.log.Warn("presence not published", "device", e.name, "topic", topic, "err", err)
		p.dropCleared(e)
	default:
		p.publishes.WithLabelValues("retried").Inc()
		p.log.Debug("presence not published: retrying", "device", e.name, "topic", topic, "err", err)
		p.mu.Lock()
		if !e.dirty && !p.closed {
			e.dirty = true
			p.queue = append(p.queue, e)
		}
		p.mu.Unlock()
		select {
		case <-p.ctx.Done():
		case <-time.After(presenceRetryPause):
		}
	}
}

// dropCleared forgets e once the document clearing it is handed over,
// unless the device was heard from again meanwhile (or is queued again).
func (p *presence) dropCleared(e *presenceEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.removed && !e.dirty && p.devices[e.name] == e {
		delete(p.devices, e.name)
	}
}

// presenceRetryPause spaces retries of documents the MQTT client refused.
const presenceRetryPause = time.Second

// flushContext is the context a publish runs in: Shutdown's once it
// began (the queue is flushed until it ends), otherwise none.
func (p *presence) flushContext() context.Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flush
}

// locateDevice is the presence documents' presenceLocator: a learned
// device is where it last spoke from, a listed one at its url's host.
func (b *Bridge) locateDevice(name string) (string, Via, bool) {
	// A [[device]] with a url is reached there, even when a reload gave
	// the url to a name learned before.
	if set := b.set.Load(); set != nil {
		if d, ok := set.Device(name); ok && d.Host != "" {
			if d.Secure {
				return d.Host, ViaDTLS, true
			}
			return d.Host, ViaUDP, true
		}
	}
	if d, ok := b.learned.lookup(name); ok {
		return d.Addr.String(), d.Via, true
	}
	set := b.set.Load()
	if set == nil {
		return "", 0, false
	}
	if _, ok := set.Device(name); ok {
		return "", 0, true // reached where it is learned; not yet
	}
	return "", 0, false
}
