package mqttside

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestEmbeddedCountsDropsForSlowSubscriber: a subscriber that stops
// reading makes the embedded broker drop messages on their way to it once
// its queue is full. Publish cannot say so (it returns once a message is
// routed), so the drops are counted in Stats.SubscriberDrops.
func TestEmbeddedCountsDropsForSlowSubscriber(t *testing.T) {
	e := newTestEmbedded(t, EmbeddedOptions{})
	conn, err := net.DialTimeout("tcp", e.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var buf bytes.Buffer
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "slow-reader"}}
	if err := connect.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "slow/#", Qos: 0}}}
	if err := sub.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	// CONNACK (4 bytes) and SUBACK (5 bytes), then the client reads no more.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	head := make([]byte, 9)
	for got := 0; got < len(head); {
		n, err := conn.Read(head[got:])
		if err != nil {
			t.Fatalf("reading CONNACK and SUBACK: %v", err)
		}
		got += n
	}
	if head[0]>>4 != packets.Connack || head[4]>>4 != packets.Suback {
		t.Fatalf("CONNACK/SUBACK expected: % x", head)
	}
	payload := bytes.Repeat([]byte("x"), 1024)
	ctx := ctxT(t, 60*time.Second)
	for i := 0; i < 100_000 && e.Stats().SubscriberDrops == 0; i++ {
		if err := e.Publish(ctx, Message{Topic: "slow/t", Payload: payload}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if e.Stats().SubscriberDrops == 0 {
		t.Fatal("no drop counted for a subscriber that stopped reading after 100,000 messages")
	}
}
