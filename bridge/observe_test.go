package bridge

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// observableDevice is a fake device with observable resources.
type observableDevice struct {
	*fakeDevice
	obs   *coapside.ObserveServer
	value atomic.Int64
	stop  context.CancelFunc
}

// startObservableDevice serves an observable /sensors/temp (its value is
// dev.value, Max-Age maxAge seconds) and a plain /plain on addr.
func startObservableDevice(t *testing.T, addr string, maxAge uint32) *observableDevice {
	t.Helper()
	d := &observableDevice{fakeDevice: startDevice(t, addr)}
	obs, err := coapside.NewObserveServer(coapside.ObserveOptions{MaxAge: maxAge})
	if err != nil {
		t.Fatal(err)
	}
	d.obs = obs
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	done := make(chan struct{})
	go func() { obs.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	temp := coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		w.SetContentFormat(message.TextPlain)
		o := w.Options()
		*o = o.SetUint(message.MaxAge, maxAge)
		w.Write([]byte(strconv.FormatInt(d.value.Load(), 10)))
	})
	d.mux.HandleResource("GET /sensors/temp", obs.Observable(temp), linkformat.Resource{Path: "/sensors/temp", ResourceTypes: []string{"temperature"}, Observable: true})
	d.mux.HandleResource("GET /sensors/hum", obs.Observable(temp), linkformat.Resource{Path: "/sensors/hum", ResourceTypes: []string{"humidity"}, Observable: true})
	d.mux.HandleFunc("GET /plain", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte(strconv.FormatInt(d.value.Load(), 10)))
	})
	return d
}

// set changes the value and notifies the observers of /sensors/temp.
func (d *observableDevice) set(v int64) {
	d.value.Store(v)
	d.obs.Notify("/sensors/temp")
}

func observeRules(addr net.Addr) string {
	return fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[observe]]
name    = "temp"
devices = ["d1"]
paths   = ["/sensors/temp"]
topic   = "obs/{device}/{path...}"

[[observe]]
name    = "temp-json"
devices = ["d1"]
paths   = ["/sensors/temp"]
topic   = "json/{device}"
payload = "json"
`, addr)
}

func TestObserveSharedObservationFeedsEveryRule(t *testing.T) {
	dev := startObservableDevice(t, "", 60)
	dev.value.Store(20)
	tb := startBridge(t, observeRules(dev.addr), nil)
	obsSub := subscribe(t, tb.MQTTAddr(), "obs/#", 0)
	jsonSub := subscribe(t, tb.MQTTAddr(), "json/#", 0)
	eventually(t, 5*time.Second, "one observer on the device", func() bool { return dev.obs.Observers("/sensors/temp") == 1 })
	eventually(t, 5*time.Second, "observations gauge at 1", func() bool { return testutil.ToFloat64(tb.metrics.observations) == 1 })
	dev.set(21)
	obsSub.waitFor(t, 5*time.Second, "obs/d1/sensors/temp", "21")
	jsonSub.waitFor(t, 5*time.Second, "json/d1", "21")
	for v := int64(22); v <= 24; v++ {
		dev.set(v)
		m := obsSub.next(t, 5*time.Second)
		if m.Topic() != "obs/d1/sensors/temp" || string(m.Payload()) != strconv.FormatInt(v, 10) {
			t.Fatalf("obs: %s %q, want %d", m.Topic(), m.Payload(), v)
		}
		if m := jsonSub.next(t, 5*time.Second); m.Topic() != "json/d1" || string(m.Payload()) != strconv.FormatInt(v, 10) {
			t.Fatalf("json: %s %q", m.Topic(), m.Payload())
		}
	}
	// Still one registration for two rules.
	if n := dev.obs.Observers("/sensors/temp"); n != 1 {
		t.Fatalf("device has %d observers, want 1", n)
	}
	// Shutdown deregisters the observation.
	tb.stop(t)
	eventually(t, 5*time.Second, "deregistration on shutdown", func() bool { return dev.obs.Observers("/sensors/temp") == 0 })
}

func TestObserveFallsBackToPolling(t *testing.T) {
	dev := startObservableDevice(t, "", 60)
	dev.value.Store(5)
	rules := fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[observe]]
name    = "plain"
devices = ["d1"]
paths   = ["/plain"]
topic   = "plain/{device}"
`, dev.addr)
	tb := startBridge(t, rules, func(_ *Config, o *Options) { o.ObserveFallbackInterval = 100 * time.Millisecond })
	sub := subscribe(t, tb.MQTTAddr(), "plain/#", 0)
	dev.value.Store(6)
	sub.waitFor(t, 5*time.Second, "plain/d1", "6")
}

// TestObserveAfterDeviceReboot restarts the device on the same port: it has
// forgotten its observers, so nothing arrives until the bridge's
// re-registration (Max-Age passed) observes again.
func TestObserveAfterDeviceReboot(t *testing.T) {
	dev := startObservableDevice(t, "", 1)
	addr := dev.addr.String()
	tb := startBridge(t, observeRules(dev.addr), func(_ *Config, o *Options) {
		o.ReobserveMin, o.ReobserveMax = 50*time.Millisecond, 200*time.Millisecond
	})
	sub := subscribe(t, tb.MQTTAddr(), "obs/#", 0)
	eventually(t, 5*time.Second, "observer", func() bool { return dev.obs.Observers("/sensors/temp") == 1 })

	// Reboot: the old server goes away, a new one with no observers comes up.
	dev.srv.Close()
	dev.stop()
	time.Sleep(100 * time.Millisecond)
	dev2 := startObservableDevice(t, addr, 1)
	eventually(t, 15*time.Second, "re-registration after reboot", func() bool { return dev2.obs.Observers("/sensors/temp") == 1 })
	dev2.set(99)
	sub.waitFor(t, 5*time.Second, "obs/d1/sensors/temp", "99")
}

func TestObserveDiscovery(t *testing.T) {
	dev := startObservableDevice(t, "", 60)
	rules := fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[observe]]
name     = "discovered"
devices  = ["d1"]
discover = "rt=temperature"
topic    = "disc/{device}/{path...}"
`, dev.addr)
	tb := startBridge(t, rules, nil)
	sub := subscribe(t, tb.MQTTAddr(), "disc/#", 0)
	eventually(t, 5*time.Second, "discovered resource observed", func() bool { return dev.obs.Observers("/sensors/temp") == 1 })
	if n := dev.obs.Observers("/sensors/hum"); n != 0 {
		t.Fatalf("humidity observed %d times; the query selects temperature only", n)
	}
	dev.set(42)
	sub.waitFor(t, 5*time.Second, "disc/d1/sensors/temp", "42")
}
