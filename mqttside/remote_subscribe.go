package mqttside

import (
	"context"
	"errors"
	"fmt"
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
	cb := r.handler(filter, h)
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return ErrClosed
	}
	r.subs[filter] = remoteSub{qos: qos, cb: cb}
	delete(r.unsubs, filter)
	r.mu.Unlock()
	// A route lets redeliveries that arrive right after connecting reach
	// the handler before the SUBSCRIBE is answered.
	r.pc.AddRoute(filter, cb)
	if !r.pc.IsConnectionOpen() {
		return nil // sent by onConnect
	}
	tok := r.pc.Subscribe(filter, qos, cb)
	if err := waitToken(ctx, tok); err != nil {
		if errors.Is(err, paho.ErrNotConnected) {
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

func (r *Remote) handler(filter string, h Handler) paho.MessageHandler {
	return func(_ paho.Client, m paho.Message) {
		r.cnt.received.Add(1)
		h.ServeMQTT(&Delivery{
			Message: Message{
				Topic:   m.Topic(),
				Payload: m.Payload(),
				QoS:     m.Qos(),
				Retain:  m.Retained(),
			},
			Duplicate: m.Duplicate(),
			Filter:    filter,
			Received:  time.Now(),
			ack:       m.Ack,
		})
	}
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
