package bridge

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPollPublishesAndOnChange(t *testing.T) {
	dev := startDevice(t, "")
	var battery atomic.Int64
	battery.Store(90)
	dev.mux.HandleFunc("GET /battery", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.SetContentFormat(message.TextPlain)
		w.Write([]byte(strconv.FormatInt(battery.Load(), 10)))
	})
	var polls atomic.Int64
	dev.mux.HandleFunc("GET /counter", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte(strconv.FormatInt(polls.Add(1), 10)))
	})
	rules := fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[poll]]
name      = "battery"
devices   = ["d1"]
paths     = ["/battery"]
interval  = "100ms"
on_change = true
retain    = true
topic     = "poll/{device}/{path...}"
payload   = "json"

[[poll]]
name     = "counter"
devices  = ["d1"]
paths    = ["/counter"]
interval = "100ms"
topic    = "count/{device}"
`, dev.addr)
	tb := startBridge(t, rules, nil)
	sub := subscribe(t, tb.MQTTAddr(), "poll/#", 0)
	counts := subscribe(t, tb.MQTTAddr(), "count/#", 0)

	// The first value may be published before the subscription: it is
	// retained, so the subscriber gets it either way.
	m := sub.next(t, 5*time.Second)
	if m.Topic() != "poll/d1/battery" || string(m.Payload()) != "90" {
		t.Fatalf("got %s %q", m.Topic(), m.Payload())
	}
	// Unchanged value: not published again although polled (the
	// subscriber may see the first value twice, retained and live).
	published := func() float64 {
		return testutil.ToFloat64(tb.metrics.messages.WithLabelValues("battery", dirCoAPToMQTT))
	}
	time.Sleep(300 * time.Millisecond)
	if published() != 1 {
		t.Fatalf("battery published %v times with an unchanged value", published())
	}
	battery.Store(89)
	sub.waitFor(t, 5*time.Second, "poll/d1/battery", "89")
	// Without on_change every poll is published, in order.
	prev := 0
	for i := 0; i < 3; i++ {
		n, err := strconv.Atoi(string(counts.next(t, 5*time.Second).Payload()))
		if err != nil || n <= prev {
			t.Fatalf("counter %d after %d (%v)", n, prev, err)
		}
		prev = n
	}
	// The count follows the publish the subscriber already saw.
	testkit.Eventually(t, 2*time.Second, "the change counted", func() bool { return published() >= 2 })
	if got := published(); got != 2 {
		t.Errorf("battery messages %v, want 2", got)
	}
}

func TestPollErrorsAreCounted(t *testing.T) {
	dev := startDevice(t, "")
	rules := fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[poll]]
name     = "missing"
devices  = ["d1"]
paths    = ["/nothing"]
interval = "100ms"
topic    = "p/{device}"
`, dev.addr)
	tb := startBridge(t, rules, nil)
	testkit.Eventually(t, 5*time.Second, "a counted 4.04", func() bool {
		return testutil.ToFloat64(tb.metrics.errors.WithLabelValues("missing", reasonCoAP)) >= 1
	})
}
