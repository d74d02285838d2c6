package bridge

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/prometheus/client_golang/prometheus"
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
	return startObservableDeviceFrom(t, addr, maxAge, nil)
}

// runObserveServer runs an ObserveServer with default options until the
// test ends.
func runObserveServer(t *testing.T) *coapside.ObserveServer {
	t.Helper()
	obs, err := coapside.NewObserveServer(coapside.ObserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { obs.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return obs
}

// startObservableDeviceFrom is startObservableDevice with the Observe value
// of new registrations taken from firstSeq (nil: the clock), as a device
// counts them from power-up.
func startObservableDeviceFrom(t *testing.T, addr string, maxAge uint32, firstSeq func() uint32) *observableDevice {
	t.Helper()
	d := &observableDevice{fakeDevice: startDevice(t, addr)}
	obs, err := coapside.NewObserveServer(coapside.ObserveOptions{MaxAge: maxAge, FirstSeq: firstSeq})
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
	testkit.Eventually(t, 5*time.Second, "one observer on the device", func() bool { return dev.obs.Observers("/sensors/temp") == 1 })
	testkit.Eventually(t, 5*time.Second, "observations gauge at 1", func() bool { return testutil.ToFloat64(tb.metrics.observations) == 1 })
	// The device, like the bridge, accepts a registration only from an
	// address that answered its Echo (RFC 9175): the bridge did.
	if st := dev.srv.Stats(); st.EchoChallenges != 1 || st.EchoVerified != 1 {
		t.Errorf("device sent %d Echo challenges and verified %d sources, want 1 and 1", st.EchoChallenges, st.EchoVerified)
	}
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
	testkit.Eventually(t, 5*time.Second, "deregistration on shutdown", func() bool { return dev.obs.Observers("/sensors/temp") == 0 })
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
	// So many rounds that observing is not tried again during the test:
	// every value after the first comes from the fallback polls.
	tb := startBridge(t, rules, func(_ *Config, o *Options) {
		o.ObserveFallbackInterval = 100 * time.Millisecond
		o.FallbackRounds = 10000
	})
	sub := subscribe(t, tb.MQTTAddr(), "plain/#", 0)
	testkit.Eventually(t, 5*time.Second, "a plain GET after the observe attempt", func() bool { return dev.count() >= 2 })
	for _, v := range []string{"6", "7"} {
		n, _ := strconv.ParseInt(v, 10, 64)
		dev.value.Store(n)
		sub.waitFor(t, 5*time.Second, "plain/d1", v)
	}
}

// TestObserveAfterDeviceReboot restarts the device on the same port: it has
// forgotten its observers, so nothing arrives until the bridge's
// re-registration (Max-Age passed) observes again. Like a real device it
// numbers notifications from a low value after the reboot (2, where it was
// at 100): the answer to the re-registration and what follows must be
// published, not dropped as stale for up to 128 s (RFC 7641 §3.4).
func TestObserveAfterDeviceReboot(t *testing.T) {
	dev := startObservableDeviceFrom(t, "", 1, func() uint32 { return 100 })
	addr := dev.addr.String()
	tb := startBridge(t, observeRules(dev.addr), func(_ *Config, o *Options) {
		o.ReobserveMin, o.ReobserveMax = 50*time.Millisecond, 200*time.Millisecond
	})
	sub := subscribe(t, tb.MQTTAddr(), "obs/#", 0)
	testkit.Eventually(t, 5*time.Second, "observer", func() bool { return dev.obs.Observers("/sensors/temp") == 1 })

	// Reboot: the old server goes away, a new one with no observers comes up.
	dev.srv.Close()
	dev.stop()
	time.Sleep(100 * time.Millisecond)
	dev2 := startObservableDeviceFrom(t, addr, 1, func() uint32 { return 2 })
	dev2.value.Store(98)
	testkit.Eventually(t, 15*time.Second, "re-registration after reboot", func() bool { return dev2.obs.Observers("/sensors/temp") == 1 })
	sub.waitFor(t, 5*time.Second, "obs/d1/sensors/temp", "98") // the answer to the re-registration
	dev2.set(99)
	sub.waitFor(t, 5*time.Second, "obs/d1/sensors/temp", "99")
	if n := testutil.ToFloat64(tb.metrics.staleDropped.WithLabelValues("d1")); n != 0 {
		t.Errorf("%v notifications dropped as stale", n)
	}
}

// TestObserveStaleNotificationsCounted: a notification older than the latest
// one (reordered on the way) is dropped, counted per device and logged.
func TestObserveStaleNotificationsCounted(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tb := startBridge(t, observeRules(conn.LocalAddr()), nil)
	sub := subscribe(t, tb.MQTTAddr(), "obs/#", 0)
	// A raw device: answer the registration, then notify out of order.
	buf := make([]byte, 1500)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, bridgeAddr, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no registration: %v", err)
	}
	reg, err := message.Decode(buf[:n])
	if v, ok := reg.Options.Observe(); err != nil || !ok || v != 0 {
		t.Fatalf("registration %v %v", reg, err)
	}
	send := func(typ message.Type, mid uint16, seq uint32, payload string) {
		t.Helper()
		m := &message.Message{Type: typ, Code: message.Content, MessageID: mid, Token: reg.Token, Payload: []byte(payload)}
		m.Options = m.Options.SetUint(message.Observe, seq).SetUint(message.MaxAge, 60)
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteTo(b, bridgeAddr); err != nil {
			t.Fatal(err)
		}
	}
	send(message.Acknowledgement, reg.MessageID, 10, "10")
	sub.waitFor(t, 5*time.Second, "obs/d1/sensors/temp", "10")
	send(message.NonConfirmable, 500, 12, "12")
	sub.waitFor(t, 5*time.Second, "obs/d1/sensors/temp", "12")
	send(message.NonConfirmable, 501, 11, "11") // reordered: older than 12
	send(message.NonConfirmable, 502, 13, "13")
	if m := sub.next(t, 5*time.Second); string(m.Payload()) != "13" {
		t.Fatalf("published %q after 12, want 13 (11 is stale)", m.Payload())
	}
	if n := testutil.ToFloat64(tb.metrics.staleDropped.WithLabelValues("d1")); n != 1 {
		t.Fatalf("bridge_observe_stale_dropped_total{device=d1} = %v, want 1", n)
	}
	if h, _ := tb.watches.observationHealth("d1"); h.StaleDropped != 1 || h.Active != 1 {
		t.Fatalf("observation health of d1 %+v, want 1 active, 1 stale dropped", h)
	}
}

// TestShutdownWithDeadObservedDevices observes libcoap servers, kills them
// (SIGKILL: no answer to anything, as after a power loss) and shuts the
// bridge down: the deregistrations can never be answered, and the shutdown
// still ends within ShutdownGrace, with RFC 7252 default retransmission
// timing, where one unanswered CON alone takes 93 s.
func TestShutdownWithDeadObservedDevices(t *testing.T) {
	srvs := []*peer.CoapServer{peer.StartCoapServerProcess(t), peer.StartCoapServerProcess(t)}
	var rules strings.Builder
	for i, s := range srvs {
		fmt.Fprintf(&rules, "[[device]]\nname = \"d%d\"\nurl  = \"coap://%s\"\n\n", i, s.Addr)
	}
	rules.WriteString("[[observe]]\nname    = \"time\"\ndevices = [\"d0\", \"d1\"]\npaths   = [\"/time\"]\ntopic   = \"time/{device}\"\n")
	tb := startBridge(t, rules.String(), func(_ *Config, o *Options) { o.CoAP = coapside.EndpointOptions{} })
	sub := subscribe(t, tb.MQTTAddr(), "time/#", 0)
	testkit.Eventually(t, 10*time.Second, "both devices observed", func() bool { return testutil.ToFloat64(tb.metrics.observations) == 2 })
	sub.next(t, 5*time.Second)
	for _, s := range srvs {
		s.Kill()
	}
	start := time.Now()
	tb.cancel()
	select {
	case err := <-tb.done:
		if err != nil {
			t.Errorf("bridge Run: %v", err)
		}
		tb.done <- nil // for the cleanup's stop
	case <-time.After(2 * ShutdownGrace):
		t.Fatal("bridge did not stop")
	}
	took := time.Since(start)
	t.Logf("shutdown with dead observed devices took %v", took.Round(time.Millisecond))
	if took >= ShutdownGrace {
		t.Errorf("shutdown took %v, beyond its bound of %v", took, ShutdownGrace)
	}
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
	testkit.Eventually(t, 5*time.Second, "discovered resource observed", func() bool { return dev.obs.Observers("/sensors/temp") == 1 })
	if n := dev.obs.Observers("/sensors/hum"); n != 0 {
		t.Fatalf("humidity observed %d times; the query selects temperature only", n)
	}
	dev.set(42)
	sub.waitFor(t, 5*time.Second, "disc/d1/sensors/temp", "42")
}

// TestObservationGaugeFollowsConcurrentChanges: observations established
// and ended at once leave bridge_observations_active at the number held
// (a change that exported its count after a later one left the gauge one
// off until the next change).
func TestObservationGaugeFollowsConcurrentChanges(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	wt := &watcher{metrics: m}
	for round := 0; round < 50; round++ {
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					wt.observationUp(1)
					runtime.Gosched()
					wt.observationUp(-1)
				}
			}()
		}
		wg.Wait()
		if got := testutil.ToFloat64(m.observations); got != 0 {
			t.Fatalf("round %d: gauge %v after every observation ended, want 0", round, got)
		}
	}
}
