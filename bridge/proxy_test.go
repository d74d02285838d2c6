package bridge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// proxyRules proxies /devices/{device}/{path...} and forward-proxy
// requests to d1 (a [[device]] at addr) and to learned devices.
func proxyRules(addr net.Addr, extra string) string {
	return fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[proxy]]
name    = "devices"
path    = "/devices/{device}/{path...}"
url     = "coap://{device}/{path...}"
methods = ["GET", "PUT"]
forward = true
timeout = "2s"
%s
`, addr, extra)
}

// proxyGet sends a GET with opts to the bridge's path.
func proxyGet(t *testing.T, c *coapside.Client, tb *testBridge, path string, opts ...message.Option) *coapside.Response {
	t.Helper()
	req, err := newReq(message.GET, tb.coapURL(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		req.Options = req.Options.Add(o.ID, o.Value)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp
}

// TestProxyReverseServesFromCacheWithinMaxAge: 100 GETs of a device
// resource through the bridge's proxy path within its Max-Age cost the
// device one request; each answer carries the device's value and the
// freshness left.
func TestProxyReverseServesFromCacheWithinMaxAge(t *testing.T) {
	dev := startObservableDevice(t, "", 60)
	dev.value.Store(21)
	tb := startBridge(t, proxyRules(dev.addr, ""), nil)
	c := newCoAPClient(t)
	for i := 0; i < 100; i++ {
		resp := proxyGet(t, c, tb, "/devices/d1/sensors/temp")
		if resp.Code != message.Content || string(resp.Payload) != "21" {
			t.Fatalf("GET %d: %v %q, want 2.05 \"21\"", i, resp.Code, resp.Payload)
		}
		if ma := resp.Options.MaxAge(); ma > 60 || ma < 55 {
			t.Fatalf("GET %d: Max-Age %d, want the freshness left of 60", i, ma)
		}
	}
	if n := dev.requested("/sensors/temp"); n != 1 {
		t.Fatalf("device got %d requests for 100 proxied GETs within Max-Age, want 1", n)
	}
	// Another representation (a query) is another cache entry.
	resp := proxyGet(t, c, tb, "/devices/d1/sensors/temp", message.Option{ID: message.URIQuery, Value: []byte("unit=C")})
	if resp.Code != message.Content {
		t.Fatalf("GET with query: %v", resp.Code)
	}
	if n := dev.requested("/sensors/temp"); n != 2 {
		t.Fatalf("device got %d requests, want 2 (the query is part of the cache key)", n)
	}
}

// TestProxyConcurrentMissesAskOnce: requests for one resource that miss
// the cache at the same time share one request to the device.
func TestProxyConcurrentMissesAskOnce(t *testing.T) {
	dev := startDevice(t, "")
	var calls atomic.Int32
	release := make(chan struct{})
	dev.mux.HandleFunc("GET /slow", func(w coapside.ResponseWriter, r *coapside.Request) {
		calls.Add(1)
		<-release
		w.Write([]byte("v"))
	})
	tb := startBridge(t, proxyRules(dev.addr, ""), nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := coapside.NewClient(coapside.ClientOptions{LocalAddr: "127.0.0.1:0"})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := c.Get(ctx, tb.coapURL("/devices/d1/slow"))
			if err == nil && (resp.Code != message.Content || string(resp.Payload) != "v") {
				err = fmt.Errorf("answer %v %q", resp.Code, resp.Payload)
			}
			errs <- err
		}()
	}
	testkit.Eventually(t, 5*time.Second, "device asked", func() bool { return calls.Load() > 0 })
	time.Sleep(200 * time.Millisecond) // the other requests arrive and join
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("device asked %d times for 20 concurrent GETs, want 1", n)
	}
}

// TestProxyETagRevalidation: a stale entry with an ETag is revalidated
// with it (RFC 7252 §5.10.6.2): the device's 2.03 Valid makes it fresh
// again and the client gets the representation; a client holding the
// ETag gets 2.03 itself.
func TestProxyETagRevalidation(t *testing.T) {
	dev := startDevice(t, "")
	var sentETags []string
	var mu sync.Mutex
	dev.mux.HandleFunc("GET /conf", func(w coapside.ResponseWriter, r *coapside.Request) {
		mu.Lock()
		sentETags = append(sentETags, etagsOf(r))
		mu.Unlock()
		o := w.Options()
		*o = o.SetETag([]byte("v1")).SetMaxAge(1)
		if tag, ok := r.Options.ETag(); ok && string(tag) == "v1" {
			w.SetCode(message.Valid)
			return
		}
		w.SetContentFormat(message.TextPlain)
		w.Write([]byte("config-v1"))
	})
	tb := startBridge(t, proxyRules(dev.addr, ""), nil)
	c := newCoAPClient(t)
	resp := proxyGet(t, c, tb, "/devices/d1/conf")
	if resp.Code != message.Content || string(resp.Payload) != "config-v1" {
		t.Fatalf("first GET: %v %q", resp.Code, resp.Payload)
	}
	// The client holds the ETag: 2.03 from the cache, no payload.
	resp = proxyGet(t, c, tb, "/devices/d1/conf", message.Option{ID: message.ETag, Value: []byte("v1")})
	if resp.Code != message.Valid || len(resp.Payload) != 0 {
		t.Fatalf("GET with the ETag: %v %q, want 2.03 without payload", resp.Code, resp.Payload)
	}
	time.Sleep(1100 * time.Millisecond) // Max-Age 1 runs out
	resp = proxyGet(t, c, tb, "/devices/d1/conf")
	if resp.Code != message.Content || string(resp.Payload) != "config-v1" {
		t.Fatalf("GET after Max-Age: %v %q, want the revalidated representation", resp.Code, resp.Payload)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sentETags) != 2 || sentETags[0] != "" || sentETags[1] != "v1" {
		t.Fatalf("device saw ETags %q, want [\"\" \"v1\"] (the stale entry revalidated with its ETag)", sentETags)
	}
}

// etagsOf joins a request's ETags.
func etagsOf(r *coapside.Request) string {
	var s []string
	for _, t := range r.Options.ETags() {
		s = append(s, string(t))
	}
	return strings.Join(s, ",")
}

// TestProxyForward: forward-proxy requests (Proxy-Uri, and Proxy-Scheme
// with Uri-Host) reach a device the bridge knows, by name or by its
// address; an unknown host is 4.03, another scheme or a target no rule
// forwards 5.05.
func TestProxyForward(t *testing.T) {
	dev := startObservableDevice(t, "", 60)
	dev.value.Store(7)
	tb := startBridge(t, proxyRules(dev.addr, `
[[proxy]]
name    = "reverse-only"
path    = "/r/{device}/{path...}"
url     = "coap://{device}/r/{path...}"
`), nil)
	c := newCoAPClient(t)
	ask := func(opts ...message.Option) *coapside.Response {
		t.Helper()
		return proxyGet(t, c, tb, "", opts...)
	}
	proxyURI := func(s string) message.Option { return message.Option{ID: message.ProxyURI, Value: []byte(s)} }
	for _, target := range []string{"coap://d1/sensors/temp", "coap://" + dev.addr.String() + "/sensors/temp"} {
		resp := ask(proxyURI(target))
		if resp.Code != message.Content || string(resp.Payload) != "7" {
			t.Fatalf("Proxy-Uri %s: %v %q, want 2.05 \"7\"", target, resp.Code, resp.Payload)
		}
	}
	resp := ask(message.Option{ID: message.ProxyScheme, Value: []byte("coap")},
		message.Option{ID: message.URIHost, Value: []byte("d1")},
		message.Option{ID: message.URIPath, Value: []byte("plain")})
	if resp.Code != message.Content || string(resp.Payload) != "7" {
		t.Fatalf("Proxy-Scheme: %v %q", resp.Code, resp.Payload)
	}
	for _, tc := range []struct {
		target string
		want   message.Code
	}{
		{"coap://nobody/sensors/temp", message.Forbidden},
		{"coap://127.0.0.1:9/sensors/temp", message.Forbidden},
		{"http://d1/sensors/temp", message.ProxyingNotSupported},
		{"coaps://d1/sensors/temp", message.ProxyingNotSupported},
	} {
		if resp := ask(proxyURI(tc.target)); resp.Code != tc.want {
			t.Errorf("Proxy-Uri %s: %v %q, want %v", tc.target, resp.Code, resp.Payload, tc.want)
		}
	}
	// The device was asked once for /sensors/temp (the second name for it
	// found the cache entry) and once for /plain.
	if n := dev.count(); n != 2 {
		t.Fatalf("device got %d requests, want 2", n)
	}
}

// TestProxyForwardNeedsARule: without forward = true a bridge answers
// Proxy-Uri 5.05 (it is not an open proxy), and the device hears nothing.
func TestProxyForwardNeedsARule(t *testing.T) {
	dev := startObservableDevice(t, "", 60)
	tb := startBridge(t, fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[proxy]]
name = "reverse"
path = "/devices/{device}/{path...}"
url  = "coap://{device}/{path...}"
`, dev.addr), nil)
	c := newCoAPClient(t)
	resp := proxyGet(t, c, tb, "", message.Option{ID: message.ProxyURI, Value: []byte("coap://d1/sensors/temp")})
	if resp.Code != message.ProxyingNotSupported {
		t.Fatalf("Proxy-Uri without a forward rule: %v, want 5.05", resp.Code)
	}
	if dev.count() != 0 {
		t.Fatal("the device was asked")
	}
}

// TestProxyUnsafeMethodInvalidates: a PUT through the proxy reaches the
// device, and a GET after it asks the device again (RFC 7252 §5.6).
func TestProxyUnsafeMethodInvalidates(t *testing.T) {
	dev := startDevice(t, "")
	var val atomic.Value
	val.Store("off")
	dev.mux.HandleFunc("GET /led", func(w coapside.ResponseWriter, r *coapside.Request) { w.Write([]byte(val.Load().(string))) })
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) {
		val.Store(string(r.Payload))
		w.SetCode(message.Changed)
	})
	tb := startBridge(t, proxyRules(dev.addr, ""), nil)
	c := newCoAPClient(t)
	if resp := proxyGet(t, c, tb, "/devices/d1/led"); string(resp.Payload) != "off" {
		t.Fatalf("GET: %q", resp.Payload)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Put(ctx, tb.coapURL("/devices/d1/led"), message.TextPlain, []byte("on"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	if resp := proxyGet(t, c, tb, "/devices/d1/led"); string(resp.Payload) != "on" {
		t.Fatalf("GET after PUT: %q, want the changed value", resp.Payload)
	}
	// DELETE is not among the rule's methods.
	resp, err = c.Delete(ctx, tb.coapURL("/devices/d1/led"))
	if err != nil || resp.Code != message.MethodNotAllowed {
		t.Fatalf("DELETE: %v %v, want 4.05", resp, err)
	}
}

// TestProxyObserveCostsTheDeviceOneObservation: 50 clients observing a
// device resource through the bridge are one observation on the device;
// its notifications reach all 50; when the last client leaves, the
// bridge's observation ends.
func TestProxyObserveCostsTheDeviceOneObservation(t *testing.T) {
	const clients = 50
	dev := startObservableDevice(t, "", 60)
	dev.value.Store(1)
	tb := startBridge(t, proxyRules(dev.addr, ""), nil)
	type watcher struct {
		c   *coapside.Client
		obs *coapside.Observation
		got chan string
	}
	ws := make([]*watcher, clients)
	// The device's requests for the first observer: its registration, and
	// that again with the Echo value the device's server asks of a source
	// it has not verified (RFC 9175 §2.4).
	first := 0
	for i := range ws {
		w := &watcher{c: newCoAPClient(t), got: make(chan string, 16)}
		// The observation lasts as long as its context.
		obs, err := w.c.Observe(context.Background(), tb.coapURL("/devices/d1/sensors/temp"), func(n coapside.Notification) {
			w.got <- string(n.Payload)
		})
		if err != nil {
			t.Fatalf("observer %d: %v", i, err)
		}
		w.obs = obs
		ws[i] = w
		if i == 0 {
			first = dev.requested("/sensors/temp")
		}
		if v := <-w.got; v != "1" {
			t.Fatalf("observer %d registered with %q, want \"1\"", i, v)
		}
	}
	if n := dev.obs.Observers("/sensors/temp"); n != 1 {
		t.Fatalf("device holds %d observers for %d clients, want 1", n, clients)
	}
	if n := dev.requested("/sensors/temp"); n != first || n > 2 {
		t.Fatalf("device got %d requests for %d observers, %d for the first, want no more than for the first (at most 2)", n, clients, first)
	}
	// The first registration was the device's answer, the others the cache's.
	if d, c := testutil.ToFloat64(tb.proxy.metrics.requests.WithLabelValues("devices", resultDevice)), testutil.ToFloat64(tb.proxy.metrics.requests.WithLabelValues("devices", resultCached)); d != 1 || c != clients-1 {
		t.Fatalf("results device %v, cache %v, want 1 and %d", d, c, clients-1)
	}
	dev.set(2)
	for i, w := range ws {
		select {
		case v := <-w.got:
			if v != "2" {
				t.Fatalf("observer %d got %q, want \"2\"", i, v)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("observer %d got no notification", i)
		}
	}
	for _, w := range ws {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := w.obs.Cancel(ctx); err != nil {
			t.Fatalf("cancel: %v", err)
		}
		cancel()
	}
	testkit.Eventually(t, 5*time.Second, "upstream observation ended", func() bool {
		return dev.obs.Observers("/sensors/temp") == 0
	})
}

// TestProxyServesObservedResourceFromNotifications: a resource an observe
// rule holds is answered from the latest notification, without a request
// to the device.
func TestProxyServesObservedResourceFromNotifications(t *testing.T) {
	dev := startObservableDevice(t, "", 60)
	dev.value.Store(5)
	tb := startBridge(t, proxyRules(dev.addr, `
[[observe]]
name    = "temp"
devices = ["d1"]
paths   = ["/sensors/temp"]
topic   = "obs/{device}/{path...}"
`), nil)
	testkit.Eventually(t, 5*time.Second, "observing", func() bool { return testutil.ToFloat64(tb.metrics.observations) == 1 })
	sub := subscribe(t, tb.MQTTAddr(), "obs/#", 0)
	dev.set(6)
	sub.waitFor(t, 5*time.Second, "obs/d1/sensors/temp", "6")
	before := dev.requested("/sensors/temp")
	c := newCoAPClient(t)
	for i := 0; i < 10; i++ {
		if resp := proxyGet(t, c, tb, "/devices/d1/sensors/temp"); resp.Code != message.Content || string(resp.Payload) != "6" {
			t.Fatalf("GET: %v %q, want the latest notification \"6\"", resp.Code, resp.Payload)
		}
	}
	if n := dev.requested("/sensors/temp"); n != before {
		t.Fatalf("device got %d more requests, want none: the observation answers", n-before)
	}
}

// TestProxySleepingDevice: a learned device's resource read while it was
// awake is answered from the cache once it sleeps (it is not woken),
// with the freshness left; past Max-Age a rule with stale = "refuse"
// answers 5.03 and one with stale = "serve" the stale value with Max-Age 0.
func TestProxySleepingDevice(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("GET /temp", func(w coapside.ResponseWriter, r *coapside.Request) {
		o := w.Options()
		*o = o.SetMaxAge(2)
		w.Write([]byte("19.5"))
	})
	tb := startBridge(t, `
[[ingress]]
name  = "up"
path  = "/up/{device}"
topic = "up/{device}"

[[proxy]]
name = "sleepy"
path = "/s/{device}/{path...}"
url  = "coap://{device}/{path...}"

[[proxy]]
name  = "sleepy-stale"
path  = "/st/{device}/{path...}"
url   = "coap://{device}/{path...}"
stale = "serve"
`, func(c *Config, o *Options) { c.Devices.Awake = 500 * time.Millisecond })
	c := newCoAPClient(t)
	// Unknown until it speaks.
	if resp := proxyGet(t, c, tb, "/s/sl1/temp"); resp.Code != message.Forbidden {
		t.Fatalf("GET before the device spoke: %v, want 4.03", resp.Code)
	}
	push := dev.pusher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := push.Post(ctx, "coap://"+tb.CoAPAddr().String()+"/up/sl1", message.TextPlain, []byte("x")); err != nil || resp.Code != message.Changed {
		t.Fatalf("push: %v %v", resp, err)
	}
	// Awake: the device is asked.
	for _, p := range []string{"/s/sl1/temp", "/st/sl1/temp"} {
		if resp := proxyGet(t, c, tb, p); resp.Code != message.Content || string(resp.Payload) != "19.5" {
			t.Fatalf("GET %s while awake: %v %q", p, resp.Code, resp.Payload)
		}
	}
	asked := dev.requested("/temp")
	if asked != 1 {
		t.Fatalf("device asked %d times, want 1 (both rules share the cache entry)", asked)
	}
	time.Sleep(600 * time.Millisecond) // asleep now
	resp := proxyGet(t, c, tb, "/s/sl1/temp")
	if resp.Code != message.Content || string(resp.Payload) != "19.5" || resp.Options.MaxAge() > 2 {
		t.Fatalf("GET while asleep: %v %q Max-Age %d, want the cached value", resp.Code, resp.Payload, resp.Options.MaxAge())
	}
	time.Sleep(1500 * time.Millisecond) // past Max-Age
	resp = proxyGet(t, c, tb, "/s/sl1/temp")
	if resp.Code != message.ServiceUnavailable || !resp.Options.Has(message.MaxAge) {
		t.Fatalf("stale, refuse: %v %q, want 5.03 with Max-Age", resp.Code, resp.Payload)
	}
	resp = proxyGet(t, c, tb, "/st/sl1/temp")
	if resp.Code != message.Content || string(resp.Payload) != "19.5" || !resp.Options.Has(message.MaxAge) || resp.Options.MaxAge() != 0 {
		t.Fatalf("stale, serve: %v %q Max-Age %d, want the value with Max-Age 0", resp.Code, resp.Payload, resp.Options.MaxAge())
	}
	if n := dev.requested("/temp"); n != asked {
		t.Fatalf("the sleeping device was asked %d times", n-asked)
	}
}

// TestProxyDeviceTimeout: a device that does not answer in the rule's
// timeout is 5.04 Gateway Timeout, counted.
func TestProxyDeviceTimeout(t *testing.T) {
	dead, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	tb := startBridge(t, proxyRules(dead.LocalAddr(), ""), nil)
	c := newCoAPClient(t)
	resp := proxyGet(t, c, tb, "/devices/d1/x")
	if resp.Code != message.GatewayTimeout {
		t.Fatalf("dead device: %v %q, want 5.04", resp.Code, resp.Payload)
	}
	if v := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("devices", reasonTimeout)); v != 1 {
		t.Fatalf("errors counted %v, want 1", v)
	}
}

// TestProxyHTTP: GET /coap/{device}/{path...} on the HTTP listener reaches
// the device through a rule with http = true and the same cache (RFC
// 8075); CBOR is shown as JSON on Accept: application/json; a device no
// rule takes over HTTP is 403, an unknown one 404.
func TestProxyHTTP(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("GET /temp", func(w coapside.ResponseWriter, r *coapside.Request) {
		o := w.Options()
		*o = o.SetMaxAge(30)
		w.SetContentFormat(message.TextPlain)
		w.Write([]byte("20.5"))
	})
	dev.mux.HandleFunc("GET /state", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.SetContentFormat(message.AppCBOR)
		w.Write([]byte{0xa1, 0x62, 'o', 'n', 0xf5}) // {"on": true}
	})
	tb := startBridge(t, proxyRules(dev.addr, `
[[proxy]]
name = "http"
http = true
url  = "coap://d1/{path...}"
`), nil)
	get := func(path, accept string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+tb.HTTPAddr().String()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for i := 0; i < 3; i++ {
		resp, body := get("/coap/d1/temp", "")
		if resp.StatusCode != http.StatusOK || body != "20.5" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("GET %d: %d %q %q", i, resp.StatusCode, body, resp.Header.Get("Content-Type"))
		}
		if cc := resp.Header.Get("Cache-Control"); !strings.HasPrefix(cc, "max-age=") {
			t.Fatalf("Cache-Control %q", cc)
		}
	}
	if n := dev.requested("/temp"); n != 1 {
		t.Fatalf("device asked %d times for 3 HTTP GETs within Max-Age, want 1", n)
	}
	// The CoAP side shares the entry.
	if resp := proxyGet(t, newCoAPClient(t), tb, "/devices/d1/temp"); string(resp.Payload) != "20.5" || dev.requested("/temp") != 1 {
		t.Fatalf("CoAP GET after HTTP: %q, device asked %d times", resp.Payload, dev.requested("/temp"))
	}
	resp, body := get("/coap/d1/state", "application/json")
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(body) != `{"on":true}` || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("CBOR as JSON: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	if resp, body := get("/coap/d2/temp", ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("device without an http rule: %d %q, want 403", resp.StatusCode, body)
	}
}

// TestProxyRuleRemovedEndsItsObservations: a reload that removes a proxy
// rule ends the observations clients held through it (4.04) and the
// bridge's observation of the device.
func TestProxyRuleRemovedEndsItsObservations(t *testing.T) {
	dev := startObservableDevice(t, "", 60)
	dev.value.Store(1)
	device := fmt.Sprintf("[[device]]\nname = \"d1\"\nurl  = \"coap://%s\"\n", dev.addr)
	tb := startBridge(t, device+`
[[proxy]]
name = "devices"
path = "/devices/{device}/{path...}"
url  = "coap://{device}/{path...}"
`, nil)
	c := newCoAPClient(t)
	got := make(chan coapside.Notification, 8)
	obs, err := c.Observe(context.Background(), tb.coapURL("/devices/d1/sensors/temp"), func(n coapside.Notification) { got <- n })
	if err != nil {
		t.Fatal(err)
	}
	<-got
	testkit.Eventually(t, 5*time.Second, "device observed", func() bool { return dev.obs.Observers("/sensors/temp") == 1 })
	tb.writeRules(t, device)
	select {
	case n := <-got:
		if n.Code != message.NotFound {
			t.Fatalf("notification after the rule was removed: %v, want 4.04", n.Code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client was not told the rule is gone")
	}
	select {
	case <-obs.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the client's observation did not end")
	}
	testkit.Eventually(t, 5*time.Second, "device observation ended", func() bool { return dev.obs.Observers("/sensors/temp") == 0 })
}

// TestProxyToCoapsDevice: a proxy rule reaches a coaps device with the
// device's own credentials (PSK), by its path and by Proxy-Uri; observers
// through the proxy cost it one observation over the DTLS session.
func TestProxyToCoapsDevice(t *testing.T) {
	psk := dtls.NewPSKStore(map[string]dtls.Secret{"bridge": keys.Secret("device-key")})
	conn, err := dtls.Listen("udp", "127.0.0.1:0", dtls.ServerConfig{PSK: psk})
	if err != nil {
		t.Fatal(err)
	}
	mux := coapside.NewServeMux()
	obs := runObserveServer(t)
	var temp atomic.Int64
	var gets atomic.Int32
	temp.Store(12)
	mux.Handle("GET /temp", obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		gets.Add(1)
		if id, _ := r.PeerIdentity(); id != "bridge" {
			w.SetCode(message.Forbidden)
			return
		}
		w.Write([]byte(fmt.Sprint(temp.Load())))
	})))
	srv := &coapside.Server{Handler: mux}
	go srv.Serve(conn)
	t.Cleanup(func() { srv.Close() })
	tb := startBridge(t, fmt.Sprintf(`
[[device]]
name         = "secure-1"
url          = "coaps://%s"
psk_identity = "bridge"
psk          = "device-key"

[[proxy]]
name    = "secure"
path    = "/s/{device}/{path...}"
url     = "coaps://{device}/{path...}"
forward = true
`, conn.LocalAddr()), nil)
	c := newCoAPClient(t)
	if resp := proxyGet(t, c, tb, "/s/secure-1/temp"); resp.Code != message.Content || string(resp.Payload) != "12" {
		t.Fatalf("GET: %v %q", resp.Code, resp.Payload)
	}
	if resp := proxyGet(t, c, tb, "", message.Option{ID: message.ProxyURI, Value: []byte("coaps://secure-1/temp")}); resp.Code != message.Content || string(resp.Payload) != "12" {
		t.Fatalf("Proxy-Uri coaps: %v %q", resp.Code, resp.Payload)
	}
	if n := gets.Load(); n != 1 {
		t.Fatalf("device asked %d times, want 1", n)
	}
	got := make(chan string, 8)
	for i := 0; i < 3; i++ {
		if _, err := newCoAPClient(t).Observe(context.Background(), tb.coapURL("/s/secure-1/temp"), func(n coapside.Notification) { got <- string(n.Payload) }); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 5*time.Second, "one observation over DTLS", func() bool { return obs.Observers("/temp") == 1 })
	for len(got) > 0 {
		<-got
	}
	temp.Store(13)
	obs.Notify("/temp")
	for i := 0; i < 3; i++ {
		select {
		case v := <-got:
			if v != "13" {
				t.Fatalf("notification %q", v)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("notification missing")
		}
	}
}

// TestProxyShutdownWithDeadObservedDevice: a client observes a device
// through the proxy, the device then goes silent with its socket open (a
// power loss far away: no ICMP, nothing answers the deregistration), and
// the bridge shuts down within ShutdownGrace, with RFC 7252 default
// retransmission timing, where one unanswered CON alone takes 93 s.
func TestProxyShutdownWithDeadObservedDevice(t *testing.T) {
	dev := startMuteAfterRegistration(t)
	tb := startBridge(t, proxyRules(dev.LocalAddr(), ""), func(_ *Config, o *Options) { o.CoAP = coapside.EndpointOptions{} })
	got := make(chan string, 16)
	if _, err := newCoAPClient(t).Observe(context.Background(), tb.coapURL("/devices/d1/t"), func(n coapside.Notification) { got <- string(n.Payload) }); err != nil {
		t.Fatal(err)
	}
	<-got
	testkit.Eventually(t, 5*time.Second, "upstream observation", func() bool { return testutil.ToFloat64(tb.proxy.metrics.upstream) == 1 })
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
	t.Logf("shutdown with a dead device observed through the proxy took %v", took.Round(time.Millisecond))
	// The proxy's deregistration waits half the shutdown's time at most,
	// leaving the rest to the other parts: the whole shutdown is not spent.
	if took >= ShutdownGrace-shutdownMargin {
		t.Errorf("shutdown took %v, its whole budget of %v", took, ShutdownGrace-shutdownMargin)
	}
}

// startMuteAfterRegistration is a device that answers the first request
// (an Observe registration) with 2.05 and Observe, then never answers
// again and keeps its socket open.
func startMuteAfterRegistration(t *testing.T) net.PacketConn {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		req, err := message.Decode(buf[:n])
		if err != nil {
			return
		}
		resp := &message.Message{Type: message.Acknowledgement, Code: message.Content, MessageID: req.MessageID, Token: req.Token,
			Options: message.Options{}.SetUint(message.Observe, 2), Payload: []byte("1")}
		b, err := resp.MarshalBinary()
		if err != nil {
			return
		}
		_, _ = conn.WriteTo(b, from)
		for {
			if _, _, err := conn.ReadFrom(buf); err != nil {
				return // closed by the cleanup
			}
		}
	}()
	return conn
}
