package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
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
		c.MQTT.Broker = "tcp://" + broker.Addr()
		c.MQTT.ClientID = fmt.Sprintf("bridge-outage-%d", time.Now().UnixNano())
		c.MQTT.Embedded.Listen = ""
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
	eventually(t, 10*time.Second, "not ready while the broker is down", func() bool { return !tb.Ready() })
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
	eventually(t, 30*time.Second, "ready after the broker is back", tb.Ready)
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
		c.MQTT.Broker = "tcp://" + broker.Addr()
		c.MQTT.ClientID = fmt.Sprintf("bridge-shutdown-%d", time.Now().UnixNano())
		c.MQTT.Embedded.Listen = ""
	})
	c := newCoAPClient(t)
	broker.Kill()
	eventually(t, 10*time.Second, "not ready while the broker is down", func() bool { return !tb.Ready() })
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
