package bridge

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const resourceRules = `
[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"
`

func TestResourceServesLatestMessage(t *testing.T) {
	tb := startBridge(t, resourceRules, nil)
	c := newCoAPClient(t)
	ctx := t.Context()

	resp, err := c.Get(ctx, tb.coapURL("/config/d1"))
	if err != nil || resp.Code != message.NotFound {
		t.Fatalf("before first message: %v %v", resp, err)
	}
	// QoS 1 publishes, one after another: the broker acknowledges each to
	// its publisher before handing it to the bridge, so d1's second value
	// may reach the bridge a moment after the next publish is made. The
	// last one is for another device: each device keeps its own value.
	publish(t, tb.MQTTAddr(), "config/d1", 1, false, `{"interval":1}`)
	publish(t, tb.MQTTAddr(), "config/d1", 1, false, `{"interval":2}`)
	publish(t, tb.MQTTAddr(), "config/d2", 1, false, `other`)
	testkit.Eventually(t, 5*time.Second, "d2's value", func() bool {
		resp, err = c.Get(ctx, tb.coapURL("/config/d2"))
		return err == nil && resp.Code == message.Content && string(resp.Payload) == `other`
	})
	testkit.Eventually(t, 5*time.Second, "d1's latest value, kept apart from d2's", func() bool {
		resp, err = c.Get(ctx, tb.coapURL("/config/d1"))
		return err == nil && resp.Code == message.Content && string(resp.Payload) == `{"interval":2}`
	})
	if resp.Options.MaxAge() != 60 {
		t.Errorf("Max-Age %d, want 60", resp.Options.MaxAge())
	}
	if resp, err = c.Get(ctx, tb.coapURL("/config/d3")); err != nil || resp.Code != message.NotFound {
		t.Fatalf("a device without a value: %v %v, want 4.04", resp, err)
	}
	resp, err = c.Put(ctx, tb.coapURL("/config/d1"), message.TextPlain, []byte("x"))
	if err != nil || resp.Code != message.MethodNotAllowed {
		t.Fatalf("PUT on a resource: %v %v", resp, err)
	}
}

// TestResourceObserveStreamsMessages registers a raw CoAP observer on a
// resource rule and checks every MQTT message arrives as a notification,
// with increasing sequence numbers and the registration's token.
func TestResourceObserveStreamsMessages(t *testing.T) {
	tb := startBridge(t, resourceRules, nil)
	publish(t, tb.MQTTAddr(), "config/d1", 0, false, "v0")
	c := newCoAPClient(t)
	testkit.Eventually(t, 5*time.Second, "first value", func() bool {
		resp, err := c.Get(t.Context(), tb.coapURL("/config/d1"))
		return err == nil && resp.Code == message.Content
	})

	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	token := []byte{9, 8, 7, 6}
	reg := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: 77, Token: token}
	reg.Options = reg.Options.SetPath("/config/d1").SetUint(message.Observe, 0)
	wire, _ := reg.MarshalBinary()
	if _, err := conn.WriteTo(wire, tb.CoAPAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	read := func() *message.Message {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		m, err := message.Decode(append([]byte(nil), buf[:n]...))
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == message.Confirmable { // acknowledge CON notifications
			ack := &message.Message{Type: message.Acknowledgement, MessageID: m.MessageID}
			w, _ := ack.MarshalBinary()
			conn.WriteTo(w, tb.CoAPAddr())
		}
		return m
	}
	first := read()
	seq, ok := first.Options.Observe()
	if !ok || string(first.Payload) != "v0" || string(first.Token) != string(token) {
		t.Fatalf("registration response %+v (observe %v)", first, ok)
	}
	if got := testutil.ToFloat64(tb.metrics.observers); got != 1 {
		t.Errorf("observers gauge %v, want 1", got)
	}
	for i := 1; i <= 3; i++ {
		want := fmt.Sprintf("v%d", i)
		publish(t, tb.MQTTAddr(), "config/d1", 0, false, want)
		n := read()
		s, ok := n.Options.Observe()
		if !ok || string(n.Payload) != want || string(n.Token) != string(token) || s <= seq {
			t.Fatalf("notification %d: payload %q token %x seq %d after %d", i, n.Payload, n.Token, s, seq)
		}
		seq = s
	}
	// Another device's topic does not notify this observer.
	publish(t, tb.MQTTAddr(), "config/d2", 0, false, "other")
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := conn.ReadFrom(buf); err == nil {
		t.Fatalf("unexpected notification %x", buf[:n])
	}
}
