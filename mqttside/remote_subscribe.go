package mqttside

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Subscribe registers h for filter; see [Client.Subscribe].
func (r *Remote) Subscribe(ctx context.Context, filter string, qos byte, h Handler) error {
	if err := ValidateFilter(filter); err != nil {
		return err
	}
	if err := ValidateQoS(qos); err != nil {
		return err
	}
	if h == nil {
		return fmt.Errorf("%w: nil handler", ErrInvalidOptions)
	}
	cb := r.route(routeKey(filter))
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return ErrClosed
	}
	r.subs[filter] = remoteSub{qos: qos, cb: cb, h: h}
	delete(r.unsubs, filter)
	r.mu.Unlock()
	// A route lets redeliveries that arrive right after connecting reach
	// the handler before the SUBSCRIBE is answered.
	r.pc.AddRoute(routeKey(filter), cb)
	if !r.pc.IsConnectionOpen() {
		return nil // sent by onConnect
	}
	tok := r.pc.Subscribe(filter, qos, cb)
	if err := waitToken(ctx, tok); err != nil {
		if errors.Is(err, paho.ErrNotConnected) || !r.pc.IsConnectionOpen() {
			return nil // lost the connection meanwhile: sent by onConnect
		}
		return fmt.Errorf("mqtt: subscribe %q on %s: %w", filter, r.broker, err)
	}
	if err := subscribeResult(tok, filter); err != nil {
		// Forget it, and drop Paho's route, which an UNSUBSCRIBE removes:
		// otherwise the handler would still see messages of other
		// subscriptions that match this filter.
		r.mu.Lock()
		delete(r.subs, filter)
		r.mu.Unlock()
		r.pc.Unsubscribe(filter)
		return err
	}
	return nil
}

func subscribeResult(tok paho.Token, filter string) error {
	if err := tok.Error(); err != nil {
		return err
	}
	st, ok := tok.(*paho.SubscribeToken)
	if !ok {
		return nil
	}
	if code, ok := st.Result()[filter]; ok && code == 0x80 { // [MQTT-3.9.3] failure return code
		return fmt.Errorf("%w: %q", ErrSubscribeRefused, filter)
	}
	return nil
}

// routeKey is the key of Paho's route for filter: Paho's Subscribe routes
// a shared subscription "$share/{group}/{filter}" as {filter}, so a route
// added under the full name would be a second one, and each message would
// be handled twice.
func routeKey(filter string) string {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if _, f, ok := strings.Cut(rest, "/"); ok {
			return f
		}
	}
	return filter
}

// route returns the Paho callback for the route key. Paho calls the
// callback of every route that matches a message, with one message whose
// Ack is shared. So that a message is acknowledged only when every
// subscription it matched has finished with it, the callback of the first
// matching route (in sort order) delivers to all of them with a shared
// countdown, and the others do nothing. Filters with one route key (a
// filter and a shared subscription of it) share the callback.
func (r *Remote) route(key string) paho.MessageHandler {
	return func(_ paho.Client, m paho.Message) {
		topic := m.Topic()
		r.mu.Lock()
		var matched []string
		for f := range r.subs {
			if matchSubscription(f, topic) {
				matched = append(matched, f)
			}
		}
		slices.Sort(matched)
		first := ""
		for i, f := range matched {
			if k := routeKey(f); i == 0 || k < first {
				first = k
			}
		}
		if len(matched) == 0 || first != key {
			r.mu.Unlock()
			if len(matched) == 0 {
				// A route left from a subscription we no longer hold.
				r.log.Debug("mqtt message without subscription", "topic", topic)
				m.Ack()
			}
			return
		}
		handlers := make([]Handler, len(matched))
		for i, f := range matched {
			handlers[i] = r.subs[f].h
		}
		r.mu.Unlock()

		var left atomic.Int32
		left.Store(int32(len(matched)))
		ack := func() {
			if left.Add(-1) == 0 {
				m.Ack()
			}
		}
		now := time.Now()
		for i, f := range matched {
			r.cnt.received.Add(1)
			handlers[i].ServeMQTT(&Delivery{
				Message: Message{
					Topic:   topic,
					Payload: m.Payload(),
					QoS:     m.Qos(),
					Retain:  m.Retained(),
				},
				Duplicate: m.Duplicate(),
				Filter:    f,
				Received:  now,
				ack:       ack,
			})
		}
	}
}

// matchSubscription matches like MatchFilter, looking through a shared
// subscription's "$share/{group}/" prefix.
func matchSubscription(filter, topic string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if _, f, ok := strings.Cut(rest, "/"); ok {
			filter = f
		}
	}
	return MatchFilter(filter, topic)
}

// Unsubscribe removes the subscription for filter. While disconnected the
// UNSUBSCRIBE is sent on the next connect.
func (r *Remote) Unsubscribe(ctx context.Context, filter string) error {
	if err := ValidateFilter(filter); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.subs, filter)
	connected := r.pc.IsConnectionOpen()
	if !connected {
		r.unsubs[filter] = true
	}
	r.mu.Unlock()
	if !connected {
		return nil
	}
	if err := waitToken(ctx, r.pc.Unsubscribe(filter)); err != nil {
		if errors.Is(err, paho.ErrNotConnected) {
			// Lost the connection meanwhile: sent on the next connect.
			r.mu.Lock()
			r.unsubs[filter] = true
			r.mu.Unlock()
			return nil
		}
		return fmt.Errorf("mqtt: unsubscribe %q on %s: %w", filter, r.broker, err)
	}
	return nil
}

func waitToken(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
