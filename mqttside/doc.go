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
// broker is unreachable, messages wait in the bounded offline buffer
// (Options.BufferSize), in order. When it is full, a new message of any QoS
// pushes out the oldest buffered QoS 0 message (whose publisher gets
// [ErrDropped]); if only QoS 1/2 messages are buffered, a new QoS 0 message
// is dropped ([ErrDropped]) and a new QoS 1/2 message is refused with
// [ErrBufferFull], so the CoAP side can answer 5.03 and let the device retry.
// Each case is counted in [Stats]. A publish whose context ends after the
// message was accepted returns an error matching [ErrPending]: the message
// stays queued and is still delivered. Accepted messages are lost only when
// Close gives up on them (counted as Failed and logged).
//
// # Subscribing
//
// A [Handler] receives a [Delivery] and must not block: it should hand the
// work on and call [Delivery.Ack] when done. With a remote broker a QoS 1/2
// message is acknowledged to the broker only then; one never acknowledged is
// redelivered by the broker after the next reconnect.
//
// # Configuration
//
// [Options] mirrors the config file; [New] picks the backend:
//
//	[mqtt]                      Options
//	broker                      Broker ("embedded" or a broker URL)
//	client_id                   ClientID
//	username, password          Username, Password (a keys.Secret: never logged)
//	ca_file                     TLS.CAFile
//	cert_file, key_file         TLS.CertFile, TLS.KeyFile
//	server_name                 TLS.ServerName
//	buffer_size                 BufferSize (offline buffer, messages; default 1000)
//	max_payload                 MaxPayload (bytes; default 256 KiB)
//	status_topic                StatusTopic ("{client_id}/status"; "-" disables)
//	[mqtt.embedded]             Options.Embedded
//	listen                      Listen (TCP, e.g. ":1883"; "" disables)
//	websocket                   WebSocket (e.g. ":8083"; "" disables)
//	auth_file                   AuthFile (see [ACL]; "" = anonymous from loopback only)
//	persistence_dir             PersistenceDir ("" = in memory)
//
// The TLS keys, buffer_size, max_payload, status_topic and persistence_dir
// keys go beyond the base design; [RemoteOptions] has further tuning
// (keep-alive, timeouts, backoff, in-flight window) with defaults.
package mqttside
