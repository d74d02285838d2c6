package bridge

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/coap-mqtt/bridge/mqttside"
)

// mqttOptions maps the [mqtt] config section onto mqttside options.
func mqttOptions(c MQTTConfig, log *slog.Logger, onEvent mqttside.EventFunc) mqttside.Options {
	return mqttside.Options{
		Broker:   c.Broker,
		ClientID: c.ClientID,
		Username: c.Username,
		Password: c.Password,
		TLS: mqttside.TLSOptions{
			CAFile:     c.CAFile,
			CertFile:   c.CertFile,
			KeyFile:    c.KeyFile,
			ServerName: c.ServerName,
		},
		BufferSize:  c.BufferSize,
		MaxPayload:  c.MaxPayload,
		StatusTopic: c.StatusTopic,
		// Rule templates never render an empty level; one reaches a
		// publish only where it mirrors the topic a client used: a
		// command's result on its response topic, or an MQTT 5
		// response topic.
		AllowEmptyLevels: true,
		Embedded: mqttside.EmbeddedOptions{
			Listen:         c.Embedded.Listen,
			WebSocket:      c.Embedded.Websocket,
			AuthFile:       c.Embedded.AuthFile,
			PersistenceDir: c.Embedded.PersistenceDir,
			MaxPayload:     c.MaxPayload,
			Logger:         log,
			OnEvent:        onEvent,
		},
		Logger:  log,
		OnEvent: onEvent,
	}
}

// maxPayload is the largest MQTT payload the bridge takes (mqtt.max_payload).
func maxPayload(c MQTTConfig) int {
	if c.MaxPayload > 0 {
		return c.MaxPayload
	}
	return mqttside.DefaultMaxPayload
}

// publisher is what the bridge's parts need of the MQTT client: handing a
// message to the broker (see mqttside.Client).
type publisher interface {
	Publish(ctx context.Context, m mqttside.Message) error
	PublishOrWithdraw(ctx context.Context, m mqttside.Message) error
}

// mqttLink is the bridge's MQTT client as the parts see it. The client is
// made by Run (its options may fail to load, which Run reports); before
// and after, a publish or subscription fails with mqttside.ErrClosed.
type mqttLink struct {
	mu sync.RWMutex
	c  mqttside.Client
}

// attach makes c the client every call goes to.
func (l *mqttLink) attach(c mqttside.Client) {
	l.mu.Lock()
	l.c = c
	l.mu.Unlock()
}

// client returns the client, or nil before Run made one.
func (l *mqttLink) client() mqttside.Client {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.c
}

// instant reports whether l's client takes or refuses every message at
// once, never waiting for a broker: the embedded broker. Run attaches the
// client once and never replaces it, so the answer holds for the
// publishes that follow.
func (l *mqttLink) instant() bool {
	_, ok := l.client().(*mqttside.Embedded)
	return ok
}

// reloadAuth reads the embedded broker's auth_file again (see
// mqttside.Embedded.ReloadAuth); with another client it does nothing.
func (l *mqttLink) reloadAuth() error {
	if e, ok := l.client().(*mqttside.Embedded); ok {
		return e.ReloadAuth()
	}
	return nil
}

// publishContext returns ctx bounded by d, the longest a publish through
// p may wait for the broker; or ctx itself when p never waits (see
// instant): the deadline's timer cost more than such a publish's own work.
func publishContext(ctx context.Context, p publisher, d time.Duration) (context.Context, context.CancelFunc) {
	if l, ok := p.(*mqttLink); ok && l.instant() {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// Publish implements publisher.
func (l *mqttLink) Publish(ctx context.Context, m mqttside.Message) error {
	c := l.client()
	if c == nil {
		return mqttside.ErrClosed
	}
	return c.Publish(ctx, m)
}

// PublishOrWithdraw implements publisher.
func (l *mqttLink) PublishOrWithdraw(ctx context.Context, m mqttside.Message) error {
	c := l.client()
	if c == nil {
		return mqttside.ErrClosed
	}
	return c.PublishOrWithdraw(ctx, m)
}

// Subscribe registers h for filter (see mqttside.Client).
func (l *mqttLink) Subscribe(ctx context.Context, filter string, qos byte, h mqttside.Handler) error {
	c := l.client()
	if c == nil {
		return mqttside.ErrClosed
	}
	return c.Subscribe(ctx, filter, qos, h)
}

// Unsubscribe removes the subscription for filter.
func (l *mqttLink) Unsubscribe(ctx context.Context, filter string) error {
	c := l.client()
	if c == nil {
		return mqttside.ErrClosed
	}
	return c.Unsubscribe(ctx, filter)
}

// Close flushes and closes the client, until ctx ends.
func (l *mqttLink) Close(ctx context.Context) error {
	c := l.client()
	if c == nil {
		return nil
	}
	return c.Close(ctx)
}

// addr is the embedded broker's TCP address, or "".
func (l *mqttLink) addr() string {
	if e, ok := l.client().(*mqttside.Embedded); ok {
		return e.Addr()
	}
	return ""
}
