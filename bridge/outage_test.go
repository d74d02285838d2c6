package bridge

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBrokerOutage runs the bridge against mosquitto, kills the broker and
// brings it back: QoS 0 pushes are buffered and delivered on reconnect, a
// QoS 1 push is answered 5.03 with Max-Age (the device retries), and
// readiness follows the connection.
func TestBrokerOutage(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	rules := `
[[ingress]]
name    = "q0"
path    = "/q0/{n}"
methods = ["POST"]
topic   = "q0/{n}"
retain  = true

[[ingress]]
name    = "q1"
path    = "/q1/{n}"
methods = ["POST"]
topic   = "q1/{n}"
qos     = 1
`
	tb := startBridge(t, rules, func(c *Config, o *Options) {
		useRemoteBroker(c, broker.Addr(), "bridge-outage")
		o.PublishTimeout = 500 * time.Millisecond
		o.HandoverTimeout = 100 * time.Millisecond
	})
	c := newCoAPClient(t)
	post := func(path string) *coapside.Response {
		t.Helper()
		resp, err := c.Post(t.Context(), tb.coapURL(path), message.TextPlain, []byte(path))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		return resp
	}
	if resp := post("/q1/before"); resp.Code != message.Changed {
		t.Fatalf("with the broker up: %v", resp.Code)
	}

	broker.Kill()
	testkit.Eventually(t, 10*time.Second, "not ready while the broker is down", func() bool { return !tb.Ready() })
	for i := 0; i < 5; i++ {
		if resp := post(fmt.Sprintf("/q0/m%d", i)); resp.Code != message.Changed {
			t.Fatalf("QoS 0 push during the outage: %v, want 2.04 (buffered)", resp.Code)
		}
	}
	if got := testutil.ToFloat64(tb.metrics.buffered.WithLabelValues("q0")); got != 5 {
		t.Errorf("buffered %v, want 5", got)
	}
	resp := post("/q1/during")
	if resp.Code != message.ServiceUnavailable || resp.Options.MaxAge() != 5 {
		t.Fatalf("QoS 1 push during the outage: %v Max-Age %d, want 5.03 with Max-Age 5", resp.Code, resp.Options.MaxAge())
	}

	broker.Restart()
	testkit.Eventually(t, 30*time.Second, "ready after the broker is back", tb.Ready)
	sub := subscribe(t, broker.Addr(), "q0/#", 0)
	got := map[string]bool{}
	for len(got) < 5 {
		m := sub.next(t, 10*time.Second)
		got[m.Topic()] = true
	}
	for i := 0; i < 5; i++ {
		if !got[fmt.Sprintf("q0/m%d", i)] {
			t.Fatalf("q0/m%d not delivered after reconnect: %v", i, got)
		}
	}
	if resp := post("/q1/after"); resp.Code != message.Changed {
		t.Fatalf("after reconnect: %v", resp.Code)
	}
}

// TestBrokerOutageEvictedQoS0IsAnError: a QoS 0 push answered 2.04 into a
// full offline buffer later gives way to a newer message (the oldest QoS 0
// one goes); the loss is an error of the push's rule, with its device,
// not only a client counter.
func TestBrokerOutageEvictedQoS0IsAnError(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	rules := `
[[ingress]]
name    = "q0"
path    = "/q0/{device}"
methods = ["POST"]
topic   = "q0/{device}"
`
	tb := startBridge(t, rules, func(c *Config, o *Options) {
		useRemoteBroker(c, broker.Addr(), "bridge-evict")
		c.MQTT.BufferSize = 2
		o.HandoverTimeout = 100 * time.Millisecond
	})
	c := newCoAPClient(t)
	broker.Kill()
	testkit.Eventually(t, 10*time.Second, "not ready while the broker is down", func() bool { return !tb.Ready() })
	for _, dev := range []string{"a", "b", "c"} {
		resp, err := c.Post(t.Context(), tb.coapURL("/q0/"+dev), message.TextPlain, []byte(dev))
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("QoS 0 push from %s during the outage: %v %v, want 2.04", dev, resp, err)
		}
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("q0", reasonBufferFull)); got != 1 {
		t.Fatalf("buffer_full errors of q0: %v, want 1 (a's push evicted by c's)", got)
	}
	var st ConsoleStatus
	consoleGet(t, tb, "/api/status", &st)
	if len(st.Errors) == 0 || st.Errors[0].Rule != "q0" || st.Errors[0].Device != "a" || st.Errors[0].Reason != reasonBufferFull {
		t.Errorf("newest recent error %+v, want q0's buffer_full for device a", st.Errors)
	}
}

// TestBrokerOutageQoS1NotTaken stops the broker while devices push QoS 1
// messages. Each device gets an empty ACK before its ACK_TIMEOUT (the
// answer is late), then 5.03 with Max-Age as a separate response — and a
// message answered 5.03 is never published, so the device's retry cannot
// make a duplicate. A push after the broker is back is published.
func TestBrokerOutageQoS1NotTaken(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	rules := `
[[ingress]]
name    = "q1"
path    = "/q1/{n}"
methods = ["POST"]
topic   = "q1/{n}"
qos     = 1
retain  = true
`
	tb := startBridge(t, rules, func(c *Config, o *Options) {
		useRemoteBroker(c, broker.Addr(), "bridge-q1")
		o.PublishTimeout = 3 * time.Second  // longer than a device's ACK_TIMEOUT
		o.CoAP = coapside.EndpointOptions{} // the defaults devices meet
	})
	broker.Kill()
	testkit.Eventually(t, 10*time.Second, "not ready while the broker is down", func() bool { return !tb.Ready() })

	// Several devices at once, through the CoAP client.
	const devices = 4
	codes := make([]message.Code, devices)
	errs := make([]error, devices)
	var wg sync.WaitGroup
	for i := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newCoAPClient(t)
			resp, err := c.Post(t.Context(), tb.coapURL(fmt.Sprintf("/q1/during%d", i)), message.TextPlain, []byte("x"))
			if err == nil {
				codes[i] = resp.Code
			}
			errs[i] = err
		}()
	}

	// One device on a raw socket, to see the message layer.
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := &message.Message{Type: message.Confirmable, Code: message.POST, MessageID: 0x4001, Token: []byte{9, 8, 7, 6}, Payload: []byte("raw")}
	req.Options = req.Options.SetPath("/q1/raw")
	wire, err := req.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if _, err := conn.WriteTo(wire, tb.CoAPAddr()); err != nil {
		t.Fatal(err)
	}
	read := func(d time.Duration) *message.Message {
		t.Helper()
		buf := make([]byte, 1500)
		conn.SetReadDeadline(time.Now().Add(d))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		m, err := message.Decode(buf[:n])
		if err != nil {
			t.Fatalf("answer: %v", err)
		}
		return m
	}
	// RFC 7252 §5.2.2: an empty ACK stops the device's retransmissions; it
	// must come before its first retransmission (ACK_TIMEOUT, 2 s).
	ack := read(10 * time.Second)
	if took := time.Since(sent); ack.Type != message.Acknowledgement || ack.Code != message.Empty || ack.MessageID != 0x4001 || took >= coapside.DefaultAckTimeout {
		t.Fatalf("first answer %v %v MID %#x after %v; want an empty ACK before %v", ack.Type, ack.Code, ack.MessageID, took, coapside.DefaultAckTimeout)
	}
	resp := read(10 * time.Second)
	if resp.Type != message.Confirmable || resp.Code != message.ServiceUnavailable || string(resp.Token) != string(req.Token) || resp.Options.MaxAge() != 5 {
		t.Fatalf("separate response %v %v token %x Max-Age %d; want CON 5.03 Max-Age 5", resp.Type, resp.Code, resp.Token, resp.Options.MaxAge())
	}
	ackWire, _ := (&message.Message{Type: message.Acknowledgement, MessageID: resp.MessageID}).MarshalBinary()
	conn.WriteTo(ackWire, tb.CoAPAddr())

	wg.Wait()
	for i := range devices {
		if errs[i] != nil || codes[i] != message.ServiceUnavailable {
			t.Fatalf("device %d during the outage: %v %v, want 5.03", i, codes[i], errs[i])
		}
	}
	if got := tb.mqtt.client().Stats().Withdrawn; got != devices+1 {
		t.Errorf("withdrawn %d, want %d", got, devices+1)
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("q1", reasonPublishTimeout)); got != devices+1 {
		t.Errorf("publish_timeout errors %v, want %d", got, devices+1)
	}

	broker.Restart()
	testkit.Eventually(t, 30*time.Second, "ready after the broker is back", tb.Ready)
	c := newCoAPClient(t)
	if resp, err := c.Post(t.Context(), tb.coapURL("/q1/after"), message.TextPlain, []byte("x")); err != nil || resp.Code != message.Changed {
		t.Fatalf("after reconnect: %v %v", resp, err)
	}
	// The restarted broker kept nothing, so every retained message it has
	// now came from the bridge after the restart, in order: anything
	// answered 5.03 would be there before q1/after.
	sub := subscribe(t, broker.Addr(), "q1/#", 1)
	if m := sub.next(t, 10*time.Second); m.Topic() != "q1/after" {
		t.Fatalf("published after the restart: %s, want only q1/after (a message answered 5.03 was published)", m.Topic())
	}
	sub.none(t, 300*time.Millisecond)
}

// TestShutdownWithBrokerKilled stops the bridge while the remote broker is
// dead (SIGKILL) and pushes wait in the offline buffer: Run returns within
// ShutdownGrace all the same.
func TestShutdownWithBrokerKilled(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	rules := `
[[ingress]]
name    = "q0"
path    = "/q0/{n}"
methods = ["POST"]
topic   = "q0/{n}"
`
	tb := startBridge(t, rules, func(c *Config, _ *Options) {
		useRemoteBroker(c, broker.Addr(), "bridge-shutdown")
	})
	c := newCoAPClient(t)
	broker.Kill()
	testkit.Eventually(t, 10*time.Second, "not ready while the broker is down", func() bool { return !tb.Ready() })
	for i := 0; i < 3; i++ {
		resp, err := c.Post(t.Context(), tb.coapURL(fmt.Sprintf("/q0/m%d", i)), message.TextPlain, []byte("x"))
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("QoS 0 push during the outage: %v %v, want 2.04 (buffered)", resp, err)
		}
	}
	if got := testutil.ToFloat64(tb.metrics.buffered.WithLabelValues("q0")); got != 3 {
		t.Fatalf("buffered %v, want 3", got)
	}

	start := time.Now()
	tb.cancel()
	select {
	case err := <-tb.done:
		took := time.Since(start)
		tb.done <- nil // for the cleanup's stop
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		t.Logf("shutdown took %v", took.Round(time.Millisecond))
		if took > ShutdownGrace {
			t.Errorf("shutdown with the broker dead took %v, want within %v", took.Round(time.Millisecond), ShutdownGrace)
		}
	case <-time.After(ShutdownGrace + 2*time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
