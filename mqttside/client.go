package mqttside

import (
	"context"
	"sync"
	"time"
)

// Client is the bridge's view of MQTT, implemented by [Remote] and [Embedded].
// All methods are safe for concurrent use.
type Client interface {
	// Start connects (remote) or starts listening (embedded). For a remote
	// broker that refuses the connection (bad credentials) it returns an
	// error wrapping ErrBrokerRefused; an unreachable broker is retried in
	// the background with backoff and Start returns nil with State not yet
	// StateConnected.
	Start(ctx context.Context) error
	// Publish hands m to the broker and returns nil once the broker has it
	// (QoS 0: handed to the connection; QoS 1/2: acknowledged). It returns
	// ErrBufferFull, ErrDropped, ErrClosed or a validation error otherwise,
	// and an error matching ErrPending if ctx ended after m was accepted.
	Publish(ctx context.Context, m Message) error
	// PublishOrWithdraw is Publish for a sender that is told the outcome
	// and retries a failure itself (a device's QoS 1 push). If ctx ends
	// while m still waits in the offline buffer, m is taken out of it and
	// the error wraps ErrWithdrawn: m is never published. A message
	// already handed to the connection cannot be withdrawn; the error then
	// wraps ErrPending and m is delivered after a reconnect, so the sender
	// must not send it again.
	PublishOrWithdraw(ctx context.Context, m Message) error
	// Subscribe registers h for filter at qos. Subscriptions made before the
	// connection is up are sent when it comes up (a broker refusal is then
	// logged, not returned) and again after every reconnect. A broker
	// refusal while connected returns ErrSubscribeRefused.
	Subscribe(ctx context.Context, filter string, qos byte, h Handler) error
	// Unsubscribe removes the subscription for filter.
	Unsubscribe(ctx context.Context, filter string) error
	// State reports the connection state.
	State() State
	// Stats returns a snapshot of the counters.
	Stats() Stats
	// Close flushes what it can until ctx ends, then disconnects or stops
	// the broker. It is idempotent.
	Close(ctx context.Context) error
}

// Message is one MQTT application message.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool

	// MQTT 5 properties. The embedded broker carries them to MQTT 5
	// subscribers and inline handlers; Remote speaks MQTT 3.1.1 and
	// ignores them.
	ResponseTopic   string
	CorrelationData []byte
	ContentType     string
	// MessageExpiry is the publisher's Message Expiry Interval, whole
	// seconds from when the broker received the message; 0: none
	// [MQTT-3.3.2.3.3].
	MessageExpiry time.Duration

	// Origin says who published the message, for OnDropped; it is not
	// sent.
	Origin Origin
}

// Origin is who published a message: the bridge's rule and the device the
// message came from.
type Origin struct {
	Rule, Device string
}

// DroppedFunc hears of a message Publish had accepted that will never
// reach the broker: a QoS 0 message evicted from the full offline buffer
// by a newer one (err is ErrDropped). It runs on the publishing goroutine,
// outside any lock, and must not block.
type DroppedFunc func(m Message, err error)

// Delivery is a message received on a subscription. Its Retain is set
// only on a stored message the broker sent because the subscription was
// made (at connect, reconnect or a new subscription), never on a live
// publish to an established subscription [MQTT-3.3.1-9].
type Delivery struct {
	Message
	// Duplicate is set on a redelivery of a QoS 1/2 message [MQTT-3.3.1-1].
	Duplicate bool
	// Filter is the subscription filter that matched.
	Filter string
	// Received is when the message arrived.
	Received time.Time

	ackOnce sync.Once
	ack     func()
}

// Ack acknowledges the message to the broker. For a QoS 1/2 message from a
// remote broker the PUBACK/PUBREC is sent only now, so a message never
// acknowledged is redelivered after a reconnect. When several
// subscriptions match one message, each handler gets its own Delivery and
// the broker is acknowledged once all of them have called Ack. Ack is
// idempotent and a no-op for QoS 0 and for the embedded broker, whose
// inline deliveries complete in-process.
//
// MQTT 3.1.1 asks for PUBACKs in the order the PUBLISHes arrived
// [MQTT-4.6.0-2]; handlers that finish out of order acknowledge out of
// order, which common brokers accept.
func (d *Delivery) Ack() {
	d.ackOnce.Do(func() {
		if d.ack != nil {
			d.ack()
		}
	})
}

// Forwarded returns a delivery of m on filter whose Ack acknowledges d: a
// handler that receives a message standing for another (a command passed
// on by another bridge) settles the carrier with it.
func (d *Delivery) Forwarded(m Message, filter string) *Delivery {
	return &Delivery{Message: m, Duplicate: d.Duplicate, Filter: filter, Received: d.Received, ack: d.Ack}
}

// Redeliverable reports whether the broker delivers the message again if
// it is never acknowledged: a QoS 1/2 message from a remote broker, which
// keeps it in the client's session (clean session off) until the PUBACK.
// The embedded broker's deliveries are complete when the handler runs.
func (d *Delivery) Redeliverable() bool { return d.ack != nil && d.QoS > 0 }

// Handler processes deliveries. ServeMQTT must not block: it should start
// the work and call Ack when the work is done.
type Handler interface {
	ServeMQTT(d *Delivery)
}

// HandlerFunc adapts a function to [Handler].
type HandlerFunc func(d *Delivery)

// ServeMQTT calls f(d).
func (f HandlerFunc) ServeMQTT(d *Delivery) { f(d) }

// State is a connection state.
type State int32

// Connection states.
const (
	StateIdle         State = iota // created, Start not called
	StateConnecting                // first connection attempt(s) in progress
	StateConnected                 // ready: publishes go straight to the broker
	StateDisconnected              // lost; reconnecting, publishes are buffered
	StateClosed                    // Close called
)

// String names the state.
func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// Event reports a change of connection state.
type Event struct {
	State State
	// Err says why, for StateDisconnected and failed attempts.
	Err  error
	Time time.Time
}

// EventFunc receives events. It is called from the client's goroutines
// and must not block.
type EventFunc func(Event)
