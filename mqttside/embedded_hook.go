package mqttside

import (
	"bytes"
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// dropHook counts the messages mochi drops on their way to a client (a
// full outbound queue or in-flight quota, an expired QoS flow), which
// Publish cannot report: it returns once the message is routed. The first
// drop after a quiet minute is logged at Warn, the others at Debug.
type dropHook struct {
	mqtt.HookBase
	log     *slog.Logger
	drops   *atomic.Uint64
	lastLog atomic.Int64 // unix nanos of the last Warn
}

// ID names the hook in mochi.
func (h *dropHook) ID() string { return "bridge-drops" }

// Provides lists the hook methods mochi should call.
func (h *dropHook) Provides(b byte) bool {
	return b == mqtt.OnPublishDropped || b == mqtt.OnQosDropped
}

// OnPublishDropped counts a message dropped for cl.
func (h *dropHook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	h.dropped(cl, pk, "queue full")
}

// OnQosDropped counts a QoS 1/2 message whose flow to cl expired. A
// client whose session a new connection with its ID took over is not
// dropping anything: mochi hands its in-flight messages to the new
// connection (or discards them as that connection's clean start asks)
// and then clears them from the old one through this hook.
func (h *dropHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.IsTakenOver() {
		return
	}
	h.dropped(cl, pk, "qos flow expired")
}

func (h *dropHook) dropped(cl *mqtt.Client, pk packets.Packet, why string) {
	h.drops.Add(1)
	level := slog.LevelDebug
	now := time.Now().UnixNano()
	if last := h.lastLog.Load(); now-last > int64(time.Minute) && h.lastLog.CompareAndSwap(last, now) {
		level = slog.LevelWarn
	}
	h.log.Log(context.Background(), level, "mqtt message dropped for a slow client", "client_id", cl.ID,
		"topic", pk.TopicName, "reason", why)
}

// authHook applies the ACL and the payload limit to external clients.
// The inline client bypasses the ACL; its payloads are checked by Publish.
type authHook struct {
	mqtt.HookBase
	acl        *atomic.Pointer[ACL] // swapped by Embedded.ReloadAuth
	log        *slog.Logger
	maxPayload int
	invalid    *atomic.Uint64
}

// ID names the hook in mochi.
func (h *authHook) ID() string { return "bridge-auth" }

// Provides lists the hook methods mochi should call.
func (h *authHook) Provides(b byte) bool {
	return bytes.IndexByte([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish}, b) >= 0
}

// OnPublish refuses payloads above the limit. An MQTT 5 client gets a
// PUBACK/PUBREC with reason 0x95 "packet too large" (MQTT 5 §3.4.2.1); an
// MQTT 3.1.1 client, which has no way to hear a refusal, is disconnected
// (MQTT 3.1.1 §4.8: the server closes the connection on a protocol it
// will not process).
func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || len(pk.Payload) <= h.maxPayload {
		return pk, nil
	}
	h.invalid.Add(1)
	h.log.Info("mqtt client payload too large", "client_id", cl.ID, "topic", pk.TopicName,
		"bytes", len(pk.Payload), "limit", h.maxPayload)
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		return pk, packets.ErrPacketTooLarge
	}
	cl.Stop(packets.ErrPacketTooLarge)
	return pk, packets.ErrRejectPacket
}

// OnConnectAuthenticate answers CONNECT; false sends "not authorized"
// [MQTT-3.1.4-2].
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	ok := h.acl.Load().Authenticate(string(pk.Connect.Username), pk.Connect.Password, cl.Net.Remote)
	if !ok {
		h.log.Info("mqtt client refused", "client_id", cl.ID, "username", string(pk.Connect.Username),
			"remote", cl.Net.Remote)
	}
	return ok
}

// OnACLCheck checks publishes (write) and subscriptions and deliveries.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	ok := h.acl.Load().Allowed(string(cl.Properties.Username), topic, write)
	if !ok {
		h.log.Debug("mqtt acl denied", "client_id", cl.ID, "username", string(cl.Properties.Username),
			"topic", topic, "write", write)
	}
	return ok
}
