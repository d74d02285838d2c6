package bridge

import (
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// slowCoAP are transmission parameters under which an unacknowledged CON
// takes over a minute to time out: what fails within seconds in these
// tests was not failed by a timeout.
var slowCoAP = coapside.EndpointOptions{AckTimeout: 2 * time.Second, AckRandomFactor: 1.0, MaxRetransmit: 4}

func skipUnlessICMP(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ICMP errors reach unconnected UDP sockets on Linux only")
	}
}

// TestObserverOnClosedSocketRemoved: an observer of a resource rule whose
// socket closes is removed within seconds, by the check CON of
// coap.limits.observe_check or by the next (NON) notification of a
// publish, each answered with ICMP port unreachable, and counted in
// bridge_observers_unreachable_total and bridge_coap_unreachable_total.
func TestObserverOnClosedSocketRemoved(t *testing.T) {
	skipUnlessICMP(t)
	for _, mode := range []string{"check", "publish"} {
		t.Run(mode, func(t *testing.T) {
			tb := startBridge(t, resourceRules, func(c *Config, o *Options) {
				o.CoAP = slowCoAP
				if mode == "check" {
					c.CoAP.Limits.ObserveCheck = 300 * time.Millisecond
				}
			})
			publish(t, tb.MQTTAddr(), "config/d1", 1, false, "v0")
			c := newCoAPClient(t)
			testkit.Eventually(t, 5*time.Second, "first value", func() bool {
				resp, err := c.Get(t.Context(), tb.coapURL("/config/d1"))
				return err == nil && resp.Code == message.Content
			})
			o := observeRaw(t, tb.CoAPAddr(), "/config/d1", []byte{1})
			if _, ok := o.next().Options.Observe(); !ok {
				t.Fatal("registration refused")
			}
			active := func() float64 { return testutil.ToFloat64(tb.metrics.observers) }
			if active() != 1 {
				t.Fatalf("observers %v, want 1", active())
			}
			o.conn.Close()
			start := time.Now()
			n := 0
			testkit.Eventually(t, 10*time.Second, "closed observer removed", func() bool {
				if mode == "publish" {
					n++
					publish(t, tb.MQTTAddr(), "config/d1", 1, false, "v"+strings.Repeat("+", n))
				}
				return active() == 0
			})
			t.Logf("removed %v after the socket closed", time.Since(start))
			if got := counterValue(t, tb.reg, "bridge_observers_unreachable_total"); got != 1 {
				t.Errorf("bridge_observers_unreachable_total %v, want 1", got)
			}
			if got := counterValue(t, tb.reg, "bridge_coap_unreachable_total"); got < 1 {
				t.Errorf("bridge_coap_unreachable_total %v, want at least 1", got)
			}
			if got := counterValue(t, tb.reg, "bridge_coap_reader_restarts_total"); got != 0 {
				t.Errorf("reader restarts %v", got)
			}
		})
	}
}

// TestCommandToClosedPortIsOffline: a command to a device whose port
// reports unreachable is known at once not to have been delivered: the
// device is taken for offline like one that does not answer, and the
// command waits at the head of its queue (announced queued at once, not
// after the rule's timeout), the next command behind it.
func TestCommandToClosedPortIsOffline(t *testing.T) {
	skipUnlessICMP(t)
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close() // nothing listens there
	rules := strings.ReplaceAll(commandRules(addr), `timeout        = "1s"`, `timeout        = "30s"`)
	tb := startBridge(t, rules, func(_ *Config, o *Options) {
		o.CoAP = slowCoAP
		o.CommandQueueTTL = time.Hour
		o.ProbeMin = time.Hour // no probe meanwhile
	})
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	start := time.Now()
	publish(t, tb.MQTTAddr(), "cmd/dev1/led", 1, false, "first")
	r := decodeResult(t, replies.next(t, 5*time.Second).Payload())
	if r.Status != "queued" || r.Position != 1 {
		t.Fatalf("result %+v, want queued at 1", r)
	}
	t.Logf("result after %v", time.Since(start))
	publish(t, tb.MQTTAddr(), "cmd/dev1/led", 1, false, "second")
	testkit.Eventually(t, 5*time.Second, "both commands queued", func() bool {
		return testutil.ToFloat64(tb.metrics.queueDepth) == 2
	})
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "queued" || r.Position != 2 {
		t.Fatalf("second result %+v, want queued at 2", r)
	}
}
