package bridge

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// decodeCatalog decodes a catalog document and checks its read_at.
func decodeCatalog(t *testing.T, payload []byte) catalogDoc {
	t.Helper()
	var doc catalogDoc
	if err := json.Unmarshal(payload, &doc); err != nil {
		t.Fatalf("catalog document %q: %v", payload, err)
	}
	if _, err := time.Parse(time.RFC3339, doc.ReadAt); err != nil {
		t.Errorf("read_at %q is not RFC 3339: %v", doc.ReadAt, err)
	}
	return doc
}

// retained waits until the bridge has handed n catalog documents to
// MQTT, then subscribes and returns the message retained on topic.
func retained(t *testing.T, tb *testBridge, n int, topic string) paho.Message {
	t.Helper()
	published := tb.watches.catalogs.publishes.WithLabelValues(catalogPublished)
	testkit.Eventually(t, 10*time.Second, "catalog published", func() bool { return testutil.ToFloat64(published) >= float64(n) })
	m := subscribe(t, tb.MQTTAddr(), topic, 1).next(t, 5*time.Second)
	if !m.Retained() {
		t.Fatalf("%s: the message (%d bytes) is not retained", topic, len(m.Payload()))
	}
	return m
}

// requested counts the device's requests for path.
func (d *fakeDevice) requested(path string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, r := range d.requests {
		if r.path == path {
			n++
		}
	}
	return n
}

func TestBuildCatalog(t *testing.T) {
	links, err := linkformat.ParseString(`</sensors/temp>;rt="temperature celsius";if="sensor";ct="0 50";obs;sz=12,` +
		`</cfg>;rt=config;ct=x;sz=3,` +
		`<coap://elsewhere/x>;rt=remote,` +
		`</plain>`)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 5, 7, 30, 0, 0, time.UTC)
	payload, sum := buildCatalog("d1", links, at, 1<<16)
	want := `{"device":"d1","read_at":"2026-12-05T07:30:00.000Z","resources":[` +
		`{"path":"/sensors/temp","rt":["temperature","celsius"],"if":["sensor"],"ct":[0,50],"obs":true,"sz":12},` +
		`{"path":"/cfg","rt":["config"]},` +
		`{"path":"/plain"}]}`
	if string(payload) != want {
		t.Fatalf("document\n got %s\nwant %s", payload, want)
	}
	// The digest ignores the reading time, and sees any other change.
	if _, again := buildCatalog("d1", links, at.Add(time.Hour), 1<<16); again != sum {
		t.Error("the same links read later have another digest")
	}
	if _, other := buildCatalog("d1", links[:2], at, 1<<16); other == sum {
		t.Error("fewer links have the same digest")
	}
}

// TestBuildCatalogBounded: a device listing thousands of links, or links
// too long for the MQTT payload limit, gets a document with what fits and
// "truncated": true.
func TestBuildCatalogBounded(t *testing.T) {
	var sb strings.Builder
	for i := range 5000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `</r/%d>;rt="t%d";obs`, i, i)
	}
	links, err := linkformat.ParseString(sb.String())
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := buildCatalog("d1", links, time.Now(), 1<<20)
	doc := decodeCatalog(t, payload)
	if len(doc.Resources) != maxCatalogEntries || !doc.Truncated || doc.Resources[maxCatalogEntries-1].Path != fmt.Sprintf("/r/%d", maxCatalogEntries-1) {
		t.Fatalf("5000 links: %d entries, truncated %v", len(doc.Resources), doc.Truncated)
	}
	const limit = 4096
	payload, _ = buildCatalog("d1", links, time.Now(), limit)
	doc = decodeCatalog(t, payload)
	if len(payload) > limit || !doc.Truncated || len(doc.Resources) < 50 {
		t.Fatalf("payload limit %d: %d bytes, %d entries, truncated %v", limit, len(payload), len(doc.Resources), doc.Truncated)
	}
	long := []linkformat.Link{{Target: "/big", Params: []linkformat.Param{{Name: "rt", Value: strings.Repeat("x", 2*limit), HasValue: true}}}}
	payload, _ = buildCatalog("d1", long, time.Now(), limit)
	if doc = decodeCatalog(t, payload); len(doc.Resources) != 0 || !doc.Truncated {
		t.Fatalf("one link longer than the limit: %s", payload)
	}
}

// catalogDevice is a device describing its resources with rt, if, ct,
// obs and sz on /.well-known/core.
func catalogDevice(t *testing.T) *fakeDevice {
	t.Helper()
	d := startDevice(t, "")
	ok := coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) { w.Write([]byte("1")) })
	d.mux.HandleResource("GET /sensors/temp", ok, linkformat.Resource{Path: "/sensors/temp", ResourceTypes: []string{"temperature"},
		Interfaces: []string{"sensor"}, ContentFormats: []uint16{0, 50}, Observable: true, Size: 12})
	d.mux.HandleResource("GET /config", ok, linkformat.Resource{Path: "/config", ResourceTypes: []string{"config", "oic.r.door"}, Interfaces: []string{"core.rp"}})
	return d
}

func TestCatalogOfDiscoverRule(t *testing.T) {
	dev := catalogDevice(t)
	rules := fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[observe]]
name          = "temps"
devices       = ["d1"]
discover      = "rt=temperature"
catalog_topic = "catalog/{device}"
topic         = "temps/{device}/{path...}"
`, dev.addr)
	tb := startBridge(t, rules, func(_ *Config, o *Options) { o.DiscoveryRefresh = 200 * time.Millisecond })
	published := tb.watches.catalogs.publishes.WithLabelValues(catalogPublished)
	unchanged := tb.watches.catalogs.publishes.WithLabelValues(catalogUnchanged)
	doc := decodeCatalog(t, retained(t, tb, 1, "catalog/d1").Payload())
	want := []catalogEntry{
		{Path: "/sensors/temp", RT: []string{"temperature"}, If: []string{"sensor"}, CT: []uint16{0, 50}, Obs: true, Size: 12},
		{Path: "/config", RT: []string{"config", "oic.r.door"}, If: []string{"core.rp"}},
	}
	if doc.Device != "d1" || doc.Truncated || !reflect.DeepEqual(doc.Resources, want) {
		t.Fatalf("catalog %+v, want the device's two resources %+v", doc, want)
	}
	// The rule still observes what its query selects from the whole list.
	testkit.Eventually(t, 5*time.Second, "temperature read", func() bool { return dev.requested("/sensors/temp") > 0 })
	if n := dev.requested("/config"); n != 0 {
		t.Fatalf("/config read %d times; the query selects temperature only", n)
	}

	// Rediscoveries that find the same resources publish nothing.
	testkit.Eventually(t, 10*time.Second, "rediscovered twice", func() bool { return testutil.ToFloat64(unchanged) >= 2 })
	if n := testutil.ToFloat64(published); n != 1 {
		t.Fatalf("published %v times for unchanged resources, want once", n)
	}

	// The device gains a resource: the next rediscovery publishes it.
	sub := subscribe(t, tb.MQTTAddr(), "catalog/d1", 1)
	if m := sub.next(t, 5*time.Second); !m.Retained() {
		t.Fatal("the first message on subscribing is not the retained catalog")
	}
	dev.mux.Describe(linkformat.Resource{Path: "/sensors/hum", ResourceTypes: []string{"humidity"}, Observable: true})
	doc = decodeCatalog(t, sub.next(t, 10*time.Second).Payload())
	if len(doc.Resources) != 3 || doc.Resources[2].Path != "/sensors/hum" || !doc.Resources[2].Obs {
		t.Fatalf("catalog after the change: %+v", doc.Resources)
	}
	// The count follows the publish the subscriber already saw.
	testkit.Eventually(t, 2*time.Second, "the change counted", func() bool { return testutil.ToFloat64(published) >= 2 })
	if n := testutil.ToFloat64(published); n != 2 {
		t.Fatalf("published %v times, want 2", n)
	}
}

// TestCatalogDiscoveryFails: a device whose /.well-known/core cannot be
// read gets no catalog, and the failure is counted against the rule.
func TestCatalogDiscoveryFails(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("GET /.well-known/core", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.SetCode(message.InternalServerError)
	})
	rules := fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[observe]]
name          = "temps"
devices       = ["d1"]
discover      = "rt=temperature"
catalog_topic = "catalog/{device}"
topic         = "temps/{device}/{path...}"
`, dev.addr)
	tb := startBridge(t, rules, func(_ *Config, o *Options) {
		o.ReobserveMin, o.ReobserveMax = 50*time.Millisecond, 100*time.Millisecond
	})
	failed := tb.metrics.errors.WithLabelValues("temps", reasonCoAP)
	testkit.Eventually(t, 10*time.Second, "failures counted", func() bool { return testutil.ToFloat64(failed) >= 2 })
	for _, r := range []string{catalogPublished, catalogBuffered, catalogUnchanged, catalogRefused, catalogFailed} {
		if n := testutil.ToFloat64(tb.watches.catalogs.publishes.WithLabelValues(r)); n != 0 {
			t.Errorf("catalog publishes{result=%q} = %v after failed discoveries, want 0", r, n)
		}
	}
	subscribe(t, tb.MQTTAddr(), "catalog/#", 1).none(t, 300*time.Millisecond)
}

// TestCatalogHugeDocument: a device listing 3000 links (a 60 kB
// link-format document, read block-wise) gets a catalog of the first
// maxCatalogEntries, marked truncated.
func TestCatalogHugeDocument(t *testing.T) {
	dev := startDevice(t, "")
	var sb strings.Builder
	for i := range 3000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `</r/%d>;rt="n";obs`, i)
	}
	body := []byte(sb.String())
	dev.mux.HandleFunc("GET /.well-known/core", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.SetContentFormat(message.MediaType(linkformat.ContentFormat))
		w.Write(body)
	})
	cfg := func(c *Config, _ *Options) { c.Catalog.Topic = "cat/{device}" }
	tb := startBridge(t, fmt.Sprintf("[[device]]\nname = \"big\"\nurl = \"coap://%s\"\n", dev.addr), cfg)
	doc := decodeCatalog(t, retained(t, tb, 1, "cat/big").Payload())
	if len(doc.Resources) != maxCatalogEntries || !doc.Truncated || doc.Resources[0].Path != "/r/0" {
		t.Fatalf("catalog of 3000 links: %d entries, truncated %v", len(doc.Resources), doc.Truncated)
	}
	t.Logf("link-format document %d bytes, catalog document %d entries", len(body), len(doc.Resources))
}

// TestCatalogLibcoap: libcoap's coap-server-notls, a listed device, gets
// its catalog from [catalog] and from a discover rule's catalog_topic, as
// its /.well-known/core lists it; the rule still observes what its query
// selects.
func TestCatalogLibcoap(t *testing.T) {
	addr := peer.StartCoapServer(t)
	cfg := func(c *Config, _ *Options) { c.Catalog.Topic = "cat/{device}" }
	tb := startBridge(t, fmt.Sprintf(`
[[device]]
name = "libcoap"
url  = "coap://%s"

[[device]]
name = "later"

[[observe]]
name          = "clock"
devices       = ["libcoap"]
discover      = "rt=ticks"
catalog_topic = "devcat/{device}"
topic         = "clock/{device}/{path...}"
`, addr), cfg)
	ticks := subscribe(t, tb.MQTTAddr(), "clock/libcoap/time", 0)
	// coap-server-notls: </time>;if="clock";rt="ticks";title="Internal Clock";ct=0;obs
	want := catalogEntry{Path: "/time", RT: []string{"ticks"}, If: []string{"clock"}, CT: []uint16{0}, Obs: true}
	for _, topic := range []string{"cat/libcoap", "devcat/libcoap"} {
		doc := decodeCatalog(t, retained(t, tb, 2, topic).Payload())
		var tm *catalogEntry
		for i, e := range doc.Resources {
			if e.Path == "/time" {
				tm = &doc.Resources[i]
			}
		}
		if doc.Device != "libcoap" || len(doc.Resources) < 2 || tm == nil || !reflect.DeepEqual(*tm, want) {
			t.Fatalf("%s: catalog of coap-server-notls: %+v", topic, doc)
		}
	}
	ticks.next(t, 10*time.Second)
	// A listed device without url is read once learned, not before.
	subscribe(t, tb.MQTTAddr(), "cat/later", 1).none(t, 300*time.Millisecond)
}

// TestCatalogLearnedDevice: with [catalog], a device without url is read
// right after its first request (it is awake then) and published; its
// further requests cost no read.
func TestCatalogLearnedDevice(t *testing.T) {
	dev := catalogDevice(t)
	rules := `
[[ingress]]
name    = "up"
path    = "/up/{device}"
methods = ["POST"]
topic   = "up/{device}"
`
	tb := startBridge(t, rules, func(c *Config, _ *Options) { c.Catalog.Topic = "cat/{device}" })
	push := dev.pusher(t)
	up := func() {
		t.Helper()
		resp, err := push.Post(t.Context(), tb.coapURL("/up/node-1"), message.TextPlain, []byte("1"))
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("push: %v %v", resp, err)
		}
	}
	up()
	doc := decodeCatalog(t, retained(t, tb, 1, "cat/node-1").Payload())
	if doc.Device != "node-1" || len(doc.Resources) != 2 || doc.Resources[0].Path != "/sensors/temp" {
		t.Fatalf("catalog of the learned device: %+v", doc)
	}
	up()
	up()
	// Reads are counted by their outcome: the device answers a read with
	// 4.01 Echo first (RFC 9175 §2.4), so its request count is no guide.
	time.Sleep(300 * time.Millisecond) // a read the pushes started would be done by now
	reads := 0.0
	for _, r := range []string{catalogPublished, catalogBuffered, catalogUnchanged, catalogRefused, catalogFailed} {
		reads += testutil.ToFloat64(tb.watches.catalogs.publishes.WithLabelValues(r))
	}
	if reads != 1 {
		t.Fatalf("/.well-known/core read %v times after three requests, want once", reads)
	}
}

func TestCatalogConfigValidate(t *testing.T) {
	for _, tc := range []struct{ topic, want string }{
		{"catalog", "needs {device}"},
		{"catalog/{device}/{kind}", "{kind}"},
		{"catalog/{device...}", "{device...}"},
		{"catalog/#/{device}", "'+' or '#'"},
	} {
		c := Defaults()
		c.Catalog.Topic = tc.topic
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "catalog.topic: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("catalog.topic %q: %v, want an error naming %q", tc.topic, err, tc.want)
		}
	}
	c := Defaults()
	c.Catalog.Topic = "catalog/{device}"
	if err := c.Validate(); err != nil {
		t.Errorf("catalog/{device}: %v", err)
	}
}

// TestCatalogFollowsReload: catalog_topic added to a running discover
// rule takes effect at once, not at the next rediscovery.
func TestCatalogFollowsReload(t *testing.T) {
	dev := catalogDevice(t)
	base := fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[observe]]
name          = "temps"
devices       = ["d1"]
discover      = "rt=temperature"
topic         = "temps/{device}/{path...}"
`, dev.addr)
	tb := startBridge(t, base, unwatched)
	testkit.Eventually(t, 5*time.Second, "temperature read", func() bool { return dev.requested("/sensors/temp") > 0 })
	tb.writeRules(t, strings.Replace(base, "discover ", "catalog_topic = \"catalog/{device}\"\ndiscover ", 1))
	tb.TriggerReload()
	doc := decodeCatalog(t, retained(t, tb, 1, "catalog/d1").Payload())
	if len(doc.Resources) != 2 {
		t.Fatalf("catalog after the reload: %+v", doc)
	}
}

// TestCatalogRepublishedAfterBrokerRestart: a broker that restarts
// without persistence loses the retained catalog; once the bridge is
// connected again, its next read publishes the catalog again although
// the device's resources did not change.
func TestCatalogRepublishedAfterBrokerRestart(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	dev := catalogDevice(t)
	tb := startBridge(t, fmt.Sprintf("[[device]]\nname = \"d1\"\nurl = \"coap://%s\"\n", dev.addr), func(c *Config, o *Options) {
		useRemoteBroker(c, broker.Addr(), "bridge-catalog")
		c.Catalog.Topic = "cat/{device}"
		o.DiscoveryRefresh = 300 * time.Millisecond
	})
	sub := func() paho.Message {
		t.Helper()
		opts := paho.NewClientOptions().AddBroker("tcp://" + broker.Addr()).SetClientID(fmt.Sprintf("sub-%d", time.Now().UnixNano()))
		c := paho.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		defer c.Disconnect(100)
		got := make(chan paho.Message, 1)
		c.Subscribe("cat/d1", 1, func(_ paho.Client, m paho.Message) {
			select {
			case got <- m:
			default:
			}
		})
		select {
		case m := <-got:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no retained catalog")
			return nil
		}
	}
	published := tb.watches.catalogs.publishes.WithLabelValues(catalogPublished)
	testkit.Eventually(t, 10*time.Second, "catalog published", func() bool { return testutil.ToFloat64(published) == 1 })
	if m := sub(); !m.Retained() {
		t.Fatal("catalog not retained")
	}
	unchanged := tb.watches.catalogs.publishes.WithLabelValues(catalogUnchanged)
	testkit.Eventually(t, 10*time.Second, "an unchanged read", func() bool { return testutil.ToFloat64(unchanged) >= 1 })

	broker.Stop()
	testkit.Eventually(t, 10*time.Second, "bridge disconnected", func() bool { return !tb.Ready() })
	broker.Restart()
	testkit.Eventually(t, 20*time.Second, "bridge connected again", tb.Ready)
	testkit.Eventually(t, 10*time.Second, "catalog published again", func() bool { return testutil.ToFloat64(published) == 2 })
	if m := sub(); !m.Retained() || decodeCatalog(t, m.Payload()).Device != "d1" {
		t.Fatalf("after the broker restart: %q", m.Payload())
	}
}

// BenchmarkBuildCatalog builds the document of a device listing 5000
// links: the work of one re-read of a large device, capped at
// maxCatalogEntries.
func BenchmarkBuildCatalog(b *testing.B) {
	var sb strings.Builder
	for i := range 5000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `</sensors/%d>;rt="temperature";if="sensor";ct="0 50";obs;sz=12`, i)
	}
	links, err := linkformat.ParseString(sb.String())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		payload, _ := buildCatalog("d1", links, time.Now(), 1<<18)
		n = len(payload)
	}
	b.ReportMetric(float64(n), "payload_bytes")
}

// TestCatalogClearedWhenDeviceRemoved: a reload that removes a device
// clears the catalog the bridge retained for it (an empty retained
// message); the catalog of the device that stays is kept.
func TestCatalogClearedWhenDeviceRemoved(t *testing.T) {
	d1, d2 := catalogDevice(t), catalogDevice(t)
	rulesFor := func(devs string) string {
		return fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[device]]
name = "d2"
url  = "coap://%s"

[[observe]]
name          = "temps"
devices       = [%s]
discover      = "rt=temperature"
catalog_topic = "catalog/{device}"
topic         = "temps/{device}/{path...}"
`, d1.addr, d2.addr, devs)
	}
	// mosquitto: the embedded broker reads retained messages without a
	// lock while they change (see presenceBroker).
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	sub := subscribe(t, broker.Addr(), "catalog/#", 1)
	tb := startBridge(t, rulesFor(`"d1", "d2"`), func(c *Config, o *Options) {
		useRemoteBroker(c, broker.Addr(), "bridge-catalog")
		unwatched(c, o)
	})
	seen := map[string]bool{}
	for len(seen) < 2 {
		seen[sub.next(t, 10*time.Second).Topic()] = true
	}

	// d2 leaves the rules entirely (its [[device]] too): its catalog goes.
	tb.writeRules(t, strings.Replace(rulesFor(`"d1"`), fmt.Sprintf("[[device]]\nname = \"d2\"\nurl  = \"coap://%s\"\n", d2.addr), "", 1))
	tb.TriggerReload()
	m := sub.next(t, 10*time.Second)
	if m.Topic() != "catalog/d2" || len(m.Payload()) != 0 {
		t.Fatalf("after the reload: %q on %s, want an empty message on catalog/d2", m.Payload(), m.Topic())
	}
	subscribe(t, broker.Addr(), "catalog/d2", 1).none(t, time.Second)
	if doc := decodeCatalog(t, subscribe(t, broker.Addr(), "catalog/d1", 1).next(t, 5*time.Second).Payload()); doc.Device != "d1" {
		t.Fatalf("the catalog kept: %+v", doc)
	}
}
