package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// deviceLabels returns the device label values of a metric family and
// the number of its series.
func deviceLabels(t *testing.T, reg prometheus.Gatherer, family string) (map[string]bool, int) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	devs := map[string]bool{}
	n := 0
	for _, f := range fams {
		if f.GetName() != family {
			continue
		}
		for _, m := range f.GetMetric() {
			n++
			for _, l := range m.GetLabel() {
				if l.GetName() == "device" {
					devs[l.GetValue()] = true
				}
			}
		}
	}
	return devs, n
}

// TestDeviceMetricsCap: with a cap of 100, 10,000 distinct device names
// (as plain-UDP requests can make up) give exactly 101 device label
// values: the first 100 names and "_overflow", which counts the rest;
// the overflowed names are counted once each and logged once.
func TestDeviceMetricsCap(t *testing.T) {
	reg := prometheus.NewRegistry()
	warnings := newWarnRecorder(slog.NewTextHandler(io.Discard, nil))
	d := newDeviceMetrics(reg, 100, slog.New(warnings))
	now := time.Unix(1_700_000_000, 0)
	for i := range 10_000 {
		name := fmt.Sprintf("dev-%05d", i)
		d.message(name, dirCoAPToMQTT, now)
		d.failed(name, reasonConvert)
	}
	d.message("dev-00007", dirMQTTToCoAP, now) // admitted: its own series
	d.message("dev-09999", dirCoAPToMQTT, now) // overflowed before: not counted again
	for _, fam := range []string{"bridge_device_messages_total", "bridge_device_errors_total", "bridge_device_last_seen_timestamp_seconds"} {
		devs, _ := deviceLabels(t, reg, fam)
		if len(devs) != 101 || !devs[deviceOverflow] || !devs["dev-00000"] || !devs["dev-00099"] || devs["dev-00100"] {
			t.Errorf("%s: %d device label values (dev-00099 %v, dev-00100 %v, _overflow %v), want the first 100 and _overflow",
				fam, len(devs), devs["dev-00099"], devs["dev-00100"], devs[deviceOverflow])
		}
	}
	if got := testutil.ToFloat64(d.overflow); got != 9900 {
		t.Errorf("overflow total %v, want 9900", got)
	}
	if got := testutil.ToFloat64(d.messages.WithLabelValues(deviceOverflow, dirCoAPToMQTT)); got != 9901 {
		t.Errorf("_overflow messages %v, want 9901", got)
	}
	if got := testutil.ToFloat64(d.errors.WithLabelValues("dev-00042", reasonConvert)); got != 1 {
		t.Errorf("dev-00042 errors %v, want 1", got)
	}
	if got := testutil.ToFloat64(d.messages.WithLabelValues("dev-00007", dirMQTTToCoAP)); got != 1 {
		t.Errorf("dev-00007 commands %v, want 1", got)
	}
	if got := testutil.ToFloat64(d.lastSeen.WithLabelValues("dev-00001")); got != 1_700_000_000 {
		t.Errorf("last seen %v", got)
	}
	if len(d.over) > d.max {
		t.Errorf("%d overflowed names remembered, more than the cap %d", len(d.over), d.max)
	}
	// Concurrent first sightings admit no more than the cap either.
	reg2 := prometheus.NewRegistry()
	d2 := newDeviceMetrics(reg2, 100, slog.New(slog.DiscardHandler))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2500 {
				d2.message(fmt.Sprintf("dev-%d-%04d", g, i), dirCoAPToMQTT, now)
			}
		})
	}
	wg.Wait()
	if devs, _ := deviceLabels(t, reg2, "bridge_device_messages_total"); len(devs) != 101 || !devs[deviceOverflow] {
		t.Errorf("concurrently: %d device label values, want 101", len(devs))
	}
	if got := testutil.ToFloat64(d2.overflow); got != 9900 {
		t.Errorf("concurrently: overflow total %v, want 9900", got)
	}
	var warned int
	for _, w := range warnings.logged() {
		if strings.Contains(w, "per-device metrics full") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("overflow logged %d times at Warn, want once: %q", warned, warnings.logged())
	}
}

// TestDeviceMetricsOffByDefault: without metrics.per_device the bridge
// registers no bridge_device_* family, and pushes count nothing per device.
func TestDeviceMetricsOffByDefault(t *testing.T) {
	tb := startBridge(t, ingressRules, nil)
	resp, err := newCoAPClient(t).Post(t.Context(), tb.coapURL("/telemetry/dev1/temp"), message.TextPlain, []byte("1"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("push: %v %v", resp, err)
	}
	if tb.metrics.devices != nil {
		t.Fatal("per-device metrics made though metrics.per_device is off")
	}
	for name := range exportedMetrics(t, tb.reg) {
		if strings.HasPrefix(name, "bridge_device_") {
			t.Errorf("%s exported with metrics.per_device off", name)
		}
	}
}

// perDevice turns per-device metrics on with a cap.
func perDevice(limit int) func(*Config, *Options) {
	return func(c *Config, _ *Options) {
		c.Metrics.PerDevice = true
		c.Metrics.PerDeviceMax = limit
	}
}

// TestDeviceMetricsIngress: pushes over UDP are counted per device, a
// push the rule cannot convert as an error of its device, and device
// names beyond the cap under "_overflow".
func TestDeviceMetricsIngress(t *testing.T) {
	tb := startBridge(t, ingressRules, perDevice(2))
	d := tb.metrics.devices
	c := newCoAPClient(t)
	before := time.Now()
	for _, dev := range []string{"dev1", "dev1", "dev2", "dev3", "dev4"} {
		resp, err := c.Post(t.Context(), tb.coapURL("/telemetry/"+dev+"/temp"), message.TextPlain, []byte("1"))
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("push %s: %v %v", dev, resp, err)
		}
	}
	resp, err := c.Post(t.Context(), tb.coapURL("/json/dev1"), message.AppCBOR, []byte{0xff, 0x00, 0x13})
	if err != nil || resp.Code != message.UnsupportedContentFormat {
		t.Fatalf("bad CBOR push: %v %v, want 4.15", resp, err)
	}
	want := map[string]float64{"dev1": 2, "dev2": 1, deviceOverflow: 2}
	for dev, n := range want {
		if got := testutil.ToFloat64(d.messages.WithLabelValues(dev, dirCoAPToMQTT)); got != n {
			t.Errorf("messages of %s: %v, want %v", dev, got, n)
		}
	}
	if devs, _ := deviceLabels(t, tb.reg, "bridge_device_messages_total"); len(devs) != 3 {
		t.Errorf("device label values %v, want dev1, dev2 and _overflow", devs)
	}
	if got := testutil.ToFloat64(d.overflow); got != 2 {
		t.Errorf("overflow total %v, want 2 (dev3, dev4)", got)
	}
	if got := testutil.ToFloat64(d.errors.WithLabelValues("dev1", reasonConvert)); got != 1 {
		t.Errorf("convert errors of dev1: %v, want 1", got)
	}
	if seen := testutil.ToFloat64(d.lastSeen.WithLabelValues("dev2")); seen < float64(before.Unix()) || seen > float64(time.Now().Unix()+1) {
		t.Errorf("dev2 last seen %v, want between %d and now", seen, before.Unix())
	}
	if !strings.Contains(strings.Join(tb.warnings.logged(), "\n"), "per-device metrics full") {
		t.Error("no warning when the cap was reached")
	}
}

// TestDeviceMetricsNotifications: notifications of an observed device are
// counted for it, once per rule they are published for.
func TestDeviceMetricsNotifications(t *testing.T) {
	dev := startObservableDevice(t, "", 60)
	dev.value.Store(20)
	tb := startBridge(t, observeRules(dev.addr), perDevice(0))
	sub := subscribe(t, tb.MQTTAddr(), "obs/#", 0)
	testkit.Eventually(t, 5*time.Second, "one observer on the device", func() bool { return dev.obs.Observers("/sensors/temp") == 1 })
	dev.set(21)
	sub.waitFor(t, 5*time.Second, "obs/d1/sensors/temp", "21")
	// Two rules share the observation: the first notification and 21,
	// each published twice (the JSON rule may trail by a moment).
	testkit.Eventually(t, 5*time.Second, "4 messages of d1", func() bool {
		return testutil.ToFloat64(tb.metrics.devices.messages.WithLabelValues("d1", dirCoAPToMQTT)) >= 4
	})
	if devs, _ := deviceLabels(t, tb.reg, "bridge_device_last_seen_timestamp_seconds"); len(devs) != 1 || !devs["d1"] {
		t.Errorf("last seen for %v, want d1", devs)
	}
}

// TestDeviceMetricsPolls: polled values published count for their
// device, a poll the device answers 4.04 as its error.
func TestDeviceMetricsPolls(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("GET /counter", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte("1"))
	})
	tb := startBridge(t, fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[poll]]
name     = "counter"
devices  = ["d1"]
paths    = ["/counter"]
interval = "100ms"
topic    = "count/{device}"

[[poll]]
name     = "missing"
devices  = ["d1"]
paths    = ["/nothing"]
interval = "100ms"
topic    = "p/{device}"
`, dev.addr), perDevice(0))
	d := tb.metrics.devices
	testkit.Eventually(t, 5*time.Second, "3 polls published and a 4.04 counted for d1", func() bool {
		return testutil.ToFloat64(d.messages.WithLabelValues("d1", dirCoAPToMQTT)) >= 3 &&
			testutil.ToFloat64(d.errors.WithLabelValues("d1", reasonCoAP)) >= 1
	})
}

// TestDeviceMetricsCommands: an answered command counts for its device
// in mqtt_to_coap, a command for an unknown device as its error.
func TestDeviceMetricsCommands(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("PUT /actuators/led", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.SetCode(message.Changed)
	})
	tb := startBridge(t, commandRules(dev.addr.String()), perDevice(0))
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	publish(t, tb.MQTTAddr(), "cmd/dev1/actuators/led", 1, false, "on")
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" {
		t.Fatalf("result %+v", r)
	}
	publish(t, tb.MQTTAddr(), "cmd/nobody/x", 1, false, "on")
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "error" {
		t.Fatalf("result %+v", r)
	}
	d := tb.metrics.devices
	if got := testutil.ToFloat64(d.messages.WithLabelValues("dev1", dirMQTTToCoAP)); got != 1 {
		t.Errorf("commands of dev1: %v, want 1", got)
	}
	if got := testutil.ToFloat64(d.errors.WithLabelValues("nobody", reasonUnknownDevice)); got != 1 {
		t.Errorf("unknown_device errors of nobody: %v, want 1", got)
	}
	if got := testutil.ToFloat64(d.messages.WithLabelValues("nobody", dirMQTTToCoAP)); got != 0 {
		t.Errorf("commands of nobody: %v, want 0", got)
	}
	if devs, _ := deviceLabels(t, tb.reg, "bridge_device_last_seen_timestamp_seconds"); len(devs) != 1 || !devs["dev1"] {
		t.Errorf("last seen for %v, want dev1 alone (nobody never answered)", devs)
	}
}

// nopPublisher takes every message at once.
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, mqttside.Message) error           { return nil }
func (nopPublisher) PublishOrWithdraw(context.Context, mqttside.Message) error { return nil }

// BenchmarkIngressPushDeviceMetrics measures the bridge's side of one
// push (rule match, message built, handed to MQTT, counted) with
// per-device metrics off and on (one device, and 10,000 names cycling
// through a cap of 1000).
func BenchmarkIngressPushDeviceMetrics(b *testing.B) {
	set, err := rules.Parse(rules.Source{Name: "rules.toml", Data: []byte(ingressRules)})
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, 10_000)
	for i := range names {
		names[i] = fmt.Sprintf("dev-%05d", i)
	}
	for _, bc := range []struct {
		name    string
		on      bool
		devices int
	}{{"off", false, 1}, {"on", true, 1}, {"on-10k-names-cap-1000", true, len(names)}} {
		b.Run(bc.name, func(b *testing.B) {
			reg := prometheus.NewRegistry()
			m := newMetrics(reg)
			if bc.on {
				m.devices = newDeviceMetrics(reg, 1000, slog.New(slog.DiscardHandler))
			}
			o := &outputs{pub: nopPublisher{}, metrics: m, log: slog.New(slog.DiscardHandler), publishTimeout: time.Second, handoverTimeout: time.Second}
			ctx := context.Background()
			payload := []byte("21.5")
			i := 0
			for b.Loop() {
				segs := []string{"telemetry", names[i%bc.devices], "temp"}
				i++
				d := decideCoAP(set, message.POST, segs, "")
				if d.action != actIngress {
					b.Fatalf("decision %v", d.action)
				}
				msg := pushInbound(payload, int(message.TextPlain), "/telemetry/x/temp", "", d.caps, time.Now())
				if err := o.publish(ctx, d.route.Ingress.Name, &d.route.Ingress.Output, d.caps, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDeviceMetricsMessage measures the per-device counting of one
// message alone: off (a nil check), one admitted device, and an
// overflowed name.
func BenchmarkDeviceMetricsMessage(b *testing.B) {
	now := time.Now()
	var off *deviceMetrics
	b.Run("off", func(b *testing.B) {
		for b.Loop() {
			off.message("dev-1", dirCoAPToMQTT, now)
		}
	})
	on := newDeviceMetrics(prometheus.NewRegistry(), 1, slog.New(slog.DiscardHandler))
	on.message("dev-1", dirCoAPToMQTT, now)
	b.Run("on", func(b *testing.B) {
		for b.Loop() {
			on.message("dev-1", dirCoAPToMQTT, now)
		}
	})
	b.Run("on-overflow", func(b *testing.B) {
		for b.Loop() {
			on.message("dev-2", dirCoAPToMQTT, now)
		}
	})
}

// TestDeviceMetricsInvalidUTF8: a device name that is not UTF-8 (any
// bytes fit in a Uri-Path option) is counted under its name with the bad
// bytes replaced, not refused by the metrics library.
func TestDeviceMetricsInvalidUTF8(t *testing.T) {
	tb := startBridge(t, ingressRules, perDevice(0))
	req, err := newReq(message.POST, tb.coapURL("/telemetry/x/temp"), []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	req.Options = req.Options.Del(message.URIPath).
		Add(message.URIPath, []byte("telemetry")).Add(message.URIPath, []byte("a\xffb")).Add(message.URIPath, []byte("temp"))
	resp, err := newCoAPClient(t).Do(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	devs, _ := deviceLabels(t, tb.reg, "bridge_device_messages_total")
	errDevs, _ := deviceLabels(t, tb.reg, "bridge_device_errors_total")
	if !devs["a\uFFFDb"] && !errDevs["a\uFFFDb"] {
		t.Errorf("answered %v; device label values %v and %v, want a\\uFFFDb", resp.Code, devs, errDevs)
	}
}
