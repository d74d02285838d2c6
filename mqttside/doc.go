// Package mqttside gives the bridge one interface to MQTT, whatever sits
// behind it.
//
// Two implementations of [Client] exist:
//
//   - [Remote] talks to an existing broker with the Eclipse Paho client
//     (tcp://, ssl://, tls://, ws://, wss://). It keeps a persistent session
//     (clean session off), reconnects with exponential backoff, resubscribes,
//     and holds publishes made while disconnected in a bounded offline buffer.
//   - [Embedded] runs a mochi-mqtt broker inside the process and reaches it
//     through mochi's inline client, so the bridge's own publishes never cross
//     a socket. External clients connect over TCP and, optionally, WebSocket.
//
// Both validate topics, filters and payload sizes the same way ([ValidateTopic],
// [ValidateFilter]) and report the same [Stats].
//
// # Publishing
//
// [Client.Publish] returns nil once the broker has the message: for QoS 0 when
// it has been handed to the network connection (or injected into the embedded
// broker), for QoS 1 and 2 when the broker acknowledged it. While a remote
// broker is unreachable, messages wait in the offline buffer. When the buffer
// is full the oldest buffered QoS 0 message is dropped (its publisher gets
// [ErrDropped]) and QoS 1/2 publishes are refused with [ErrBufferFull], so the
// CoAP side can answer 5.03 and let the device retry. A publish whose context
// ends after the message was accepted returns an error matching [ErrPending]:
// the message stays queued and is still delivered.
//
// # Subscribing
//
// A [Handler] receives a [Delivery] and must not block: it should hand the
// work on and call [Delivery.Ack] when done. With a remote broker a QoS 1/2
// message is acknowledged to the broker only then; one never acknowledged is
// redelivered by the broker after the next reconnect.
package mqttside
