package mqttside

import (
	"bytes"
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
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

// TestEmbeddedResumedSessionIsNoDrop: QoS 1 messages that waited for a
// client with a persistent session are delivered when it connects again;
// moving them to the new connection is not counted or logged as a drop.
func TestEmbeddedResumedSessionIsNoDrop(t *testing.T) {
	e := newTestEmbedded(t, EmbeddedOptions{})
	got := make(chan string, 10)
	connect := func() paho.Client {
		o := paho.NewClientOptions().AddBroker("tcp://" + e.Addr()).SetClientID("resumes").SetCleanSession(false).
			SetAutoReconnect(false)
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal("connect:", tok.Error())
		}
		return c
	}
	c := connect()
	if tok := c.Subscribe("held/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("subscribe:", tok.Error())
	}
	c.Disconnect(100)
	ctx := ctxT(t, 5*time.Second)
	for _, p := range []string{"a", "b"} {
		if err := e.Publish(ctx, Message{Topic: "held/t", Payload: []byte(p), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	c = connect()
	defer c.Disconnect(100)
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case p := <-got:
			seen[p] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("delivered to the resumed session: %v, want a and b", seen)
		}
	}
	if n := e.Stats().SubscriberDrops; n != 0 {
		t.Fatalf("%d drops counted for messages delivered to the resumed session", n)
	}
}
