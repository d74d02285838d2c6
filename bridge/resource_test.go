package bridge

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
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
	// QoS 1 publishes from separate clients: the broker acknowledges each
	// to its publisher before handing it to the bridge, and orders only
	// one client's messages, so the second value is published once the
	// first is served. The last one is for another device: each device
	// keeps its own value.
	publish(t, tb.MQTTAddr(), "config/d1", 1, false, `{"interval":1}`)
	testkit.Eventually(t, 5*time.Second, "d1's first value", func() bool {
		resp, err = c.Get(ctx, tb.coapURL("/config/d1"))
		return err == nil && resp.Code == message.Content && string(resp.Payload) == `{"interval":1}`
	})
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

	token := []byte{9, 8, 7, 6}
	obs := observeRaw(t, tb.CoAPAddr(), "/config/d1", token)
	read := obs.next
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
	obs.none(300 * time.Millisecond)
}

// rawObserver is a CoAP observer of a bridge resource, on its own socket.
type rawObserver struct {
	t     *testing.T
	conn  net.PacketConn
	addr  net.Addr
	buf   []byte
	first *message.Message // the registration's answer, read by observeRaw
}

// observeRaw registers a raw CoAP observer of path on the bridge at addr;
// its next method reads the registration's response first. Like any
// client of the bridge over plain UDP, it proves its address by repeating
// the registration with the Echo value of the bridge's 4.01 (RFC 9175).
func observeRaw(t *testing.T, addr net.Addr, path string, token []byte) *rawObserver {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	reg := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: 77, Token: token}
	reg.Options = reg.Options.SetPath(path).SetUint(message.Observe, 0)
	wire, _ := reg.MarshalBinary()
	if _, err := conn.WriteTo(wire, addr); err != nil {
		t.Fatal(err)
	}
	o := &rawObserver{t: t, conn: conn, addr: addr, buf: make([]byte, 1500)}
	first := o.next()
	echo, ok := first.Options.Echo()
	if first.Code != message.Unauthorized || !ok {
		o.first = first
		return o
	}
	reg.MessageID++
	reg.Options = reg.Options.SetEcho(echo)
	wire, _ = reg.MarshalBinary()
	if _, err := conn.WriteTo(wire, addr); err != nil {
		t.Fatal(err)
	}
	return o
}

// next reads the next response or notification, acknowledging a
// confirmable one.
func (o *rawObserver) next() *message.Message {
	o.t.Helper()
	if m := o.first; m != nil {
		o.first = nil
		return m
	}
	o.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := o.conn.ReadFrom(o.buf)
	if err != nil {
		o.t.Fatal(err)
	}
	m, err := message.Decode(append([]byte(nil), o.buf[:n]...))
	if err != nil {
		o.t.Fatal(err)
	}
	if m.Type == message.Confirmable { // acknowledge CON notifications
		ack := &message.Message{Type: message.Acknowledgement, MessageID: m.MessageID}
		w, _ := ack.MarshalBinary()
		o.conn.WriteTo(w, o.addr)
	}
	return m
}

// none fails if a message arrives within d.
func (o *rawObserver) none(d time.Duration) {
	o.t.Helper()
	o.conn.SetReadDeadline(time.Now().Add(d))
	if n, _, err := o.conn.ReadFrom(o.buf); err == nil {
		o.t.Fatalf("unexpected notification %x", o.buf[:n])
	}
}

// TestResourceOverlappingFiltersNotifyOnce: a topic matching two resource
// rules' filters (config/+ and config/#) is delivered once per filter; the
// message is kept once and every observer hears of it once, whichever
// broker delivers.
func TestResourceOverlappingFiltersNotifyOnce(t *testing.T) {
	for _, remote := range []bool{false, true} {
		name := "embedded broker"
		if remote {
			name = "mosquitto"
		}
		t.Run(name, func(t *testing.T) {
			var broker string
			tb := startBridge(t, resourceRules+`
[[resource]]
name  = "all-config"
path  = "/all/{rest...}"
topic = "config/{rest...}"
`, func(c *Config, o *Options) {
				if remote {
					broker = peer.StartMosquitto(t, 0, "allow_anonymous true\n").Addr()
					useRemoteBroker(c, broker, "bridge-resource-overlap")
				}
			})
			if !remote {
				broker = tb.MQTTAddr()
			}
			publish(t, broker, "config/d1", 1, false, "v0")
			c := newCoAPClient(t)
			testkit.Eventually(t, 5*time.Second, "first value", func() bool {
				resp, err := c.Get(t.Context(), tb.coapURL("/config/d1"))
				return err == nil && resp.Code == message.Content
			})
			byRule := observeRaw(t, tb.CoAPAddr(), "/config/d1", []byte{1})
			byRest := observeRaw(t, tb.CoAPAddr(), "/all/d1", []byte{2})
			for _, o := range []*rawObserver{byRule, byRest} {
				if first := o.next(); string(first.Payload) != "v0" {
					t.Fatalf("registration response %q, want v0", first.Payload)
				}
			}
			// Every notification renders the resource once, counted in
			// bridge_messages_total; a notification still waiting to be
			// sent is replaced by a newer one, so the count, not what the
			// observers read, tells how often they were notified.
			served := func() (n float64) {
				for _, rule := range []string{"config", "all-config"} {
					n += testutil.ToFloat64(tb.metrics.messages.WithLabelValues(rule, dirMQTTToCoAP))
				}
				return n
			}
			before := served()
			values := []string{"v1", "v2", "v3"}
			for _, v := range values {
				publish(t, broker, "config/d1", 1, false, v)
				for _, o := range []*rawObserver{byRule, byRest} {
					if n := o.next(); string(n.Payload) != v {
						t.Fatalf("notification %q, want %q", n.Payload, v)
					}
				}
			}
			// v3 reached both observers, so the bridge has taken every
			// copy of v1 and v2 the broker sent before it.
			if got, want := served()-before, float64(2*len(values)); got != want {
				t.Fatalf("%v notifications for %d messages to 2 observers, want %v", got, len(values), want)
			}
		})
	}
}

// TestResourceAccept: a GET whose Accept names the format the value is in
// gets it; another format is 4.06 Not Acceptable (RFC 7252 §5.10.4),
// counted on the rule, as is any Accept for a value of no known format;
// discovery serves link-format only.
func TestResourceAccept(t *testing.T) {
	tb := startBridge(t, resourceRules+`
[[resource]]
name           = "json"
path           = "/j/{x}"
topic          = "j/{x}"
content_format = "json"
`, nil)
	c := newCoAPClient(t)
	get := func(path string, accept message.MediaType) *coapside.Response {
		t.Helper()
		req, err := newReq(message.GET, tb.coapURL(path), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Options = req.Options.SetUint(message.Accept, uint32(accept))
		resp, err := c.Do(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	publish(t, tb.MQTTAddr(), "j/a", 1, true, `{"a":1}`)
	publish(t, tb.MQTTAddr(), "config/d1", 1, true, `raw`)
	testkit.Eventually(t, 5*time.Second, "the value served", func() bool {
		return get("/j/a", message.AppJSON).Code == message.Content
	})
	if resp := get("/j/a", message.AppJSON); string(resp.Payload) != `{"a":1}` {
		t.Errorf("Accept json: %q", resp.Payload)
	}
	if resp := get("/j/a", message.AppCBOR); resp.Code != message.NotAcceptable || len(resp.Payload) != 0 {
		t.Errorf("Accept cbor on a JSON value: %v %q, want 4.06 without the value", resp.Code, resp.Payload)
	}
	testkit.Eventually(t, 5*time.Second, "config's value", func() bool {
		resp, err := c.Get(t.Context(), tb.coapURL("/config/d1"))
		return err == nil && resp.Code == message.Content
	})
	if resp := get("/config/d1", message.TextPlain); resp.Code != message.NotAcceptable {
		t.Errorf("Accept text on a value of no known format: %v, want 4.06", resp.Code)
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("json", reasonNotAcceptable)); got != 1 {
		t.Errorf("json's not_acceptable errors %v, want 1", got)
	}
	if resp := get("/.well-known/core", message.AppJSON); resp.Code != message.NotAcceptable {
		t.Errorf("discovery with Accept json: %v, want 4.06", resp.Code)
	}
	if resp := get("/.well-known/core", message.AppLinkFormat); resp.Code != message.Content {
		t.Errorf("discovery with Accept link-format: %v, want 2.05", resp.Code)
	}
}

// TestResourceEmptyMessageClearsValue: an empty message on a resource
// rule's topic (the MQTT way of deleting a retained one) leaves the topic
// without a value, as a restart or reconnect would find it: GET answers
// 4.04, discovery does not list the path, an observer is told 4.04 and
// its observation ends (RFC 7641 §3.2). A later message is served again.
func TestResourceEmptyMessageClearsValue(t *testing.T) {
	tb := startBridge(t, resourceRules, nil)
	c := newCoAPClient(t)
	ctx := t.Context()
	publish(t, tb.MQTTAddr(), "config/d1", 1, true, "v1")
	testkit.Eventually(t, 5*time.Second, "the first value", func() bool {
		resp, err := c.Get(ctx, tb.coapURL("/config/d1"))
		return err == nil && resp.Code == message.Content
	})
	obs := observeRaw(t, tb.CoAPAddr(), "/config/d1", []byte{1, 2})
	if first := obs.next(); first.Code != message.Content || string(first.Payload) != "v1" {
		t.Fatalf("registration response %v %q", first.Code, first.Payload)
	}

	publish(t, tb.MQTTAddr(), "config/d1", 1, true, "")
	if n := obs.next(); n.Code != message.NotFound {
		t.Fatalf("notification %v %q, want 4.04", n.Code, n.Payload)
	}
	resp, err := c.Get(ctx, tb.coapURL("/config/d1"))
	if err != nil || resp.Code != message.NotFound {
		t.Fatalf("GET after the value was cleared: %v %v, want 4.04", resp, err)
	}
	resp, err = c.Get(ctx, tb.coapURL("/.well-known/core"))
	if err != nil || resp.Code != message.Content || strings.Contains(string(resp.Payload), "/config/d1") {
		t.Fatalf("discovery after the value was cleared: %v %q %v", resp, resp.Payload, err)
	}

	publish(t, tb.MQTTAddr(), "config/d1", 1, false, "v2")
	testkit.Eventually(t, 5*time.Second, "the new value", func() bool {
		resp, err := c.Get(ctx, tb.coapURL("/config/d1"))
		return err == nil && resp.Code == message.Content && string(resp.Payload) == "v2"
	})
	obs.none(300 * time.Millisecond) // its observation ended with the 4.04
}
