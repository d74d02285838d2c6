package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// proxyDeviceRules names libcoap's coap-server at port "lib" and proxies
// it (reverse, forward and HTTP) for GET and PUT; extra is appended.
func proxyDeviceRules(port int, extra string) string {
	return fmt.Sprintf(`
[[device]]
name = "lib"
url  = "coap://127.0.0.1:%d"

[[proxy]]
name    = "devices"
path    = "/devices/{device}/{path...}"
url     = "coap://{device}/{path...}"
methods = ["GET", "PUT"]
forward = true
http    = true
timeout = "5s"
%s`, port, extra)
}

// series reads one sample of a metric with labels (name{a="b"}) from the
// bridge's /metrics; a series not created yet is 0.
func series(t *testing.T, b *bridgeProc, name string) float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", b.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

const (
	devReqs     = `bridge_proxy_device_requests_total{rule="devices"}`
	upstreamObs = "bridge_proxy_upstream_observations"
)

// proxyResult is the bridge_proxy_requests_total series of rule devices.
func proxyResult(result string) string {
	return fmt.Sprintf(`bridge_proxy_requests_total{result=%q,rule="devices"}`, result)
}

// putDirect writes value to the device's /example_data with coap-client,
// making it a small resource without Max-Age (60 s of freshness).
func putDirect(t *testing.T, client string, port int, value string) {
	t.Helper()
	out, code := run(t, 20*time.Second, ".", client, "-m", "put", "-t", "text/plain", "-e", value, fmt.Sprintf("coap://127.0.0.1:%d/example_data", port))
	if code != 0 {
		t.Fatalf("coap-client put: exit %d %s", code, out)
	}
}

// TestE2EProxyLibcoapCache: 100 GETs through the forward proxy by
// libcoap's coap-client (-P) of a resource without Max-Age cost
// coap-server one request; the reverse path shares the cache entry. A
// proxy without a cache (or one keyed by the address it was reached by)
// would ask the device 100 (or 2) times.
func TestE2EProxyLibcoapCache(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	dev := startCoapServer(t)
	putDirect(t, client, dev, "cached-1")
	b := startBridgeBin(t, bridgeSetup{rules: proxyDeviceRules(dev, "")})
	proxyURI := b.coapURL("")
	before, hits0 := series(t, b, devReqs), metric(t, b, "bridge_proxy_cache_hits_total")
	const n = 100
	for i := 0; i < n; i++ {
		out, code := run(t, 20*time.Second, ".", client, "-P", proxyURI, "-m", "get", "coap://lib/example_data")
		if code != 0 || !strings.Contains(out, "cached-1") {
			t.Fatalf("proxied GET %d: exit %d %q", i, code, out)
		}
	}
	if d := series(t, b, devReqs) - before; d != 1 {
		t.Fatalf("device asked %v times for %d proxied GETs within Max-Age, want 1", d, n)
	}
	if c := series(t, b, proxyResult("cache")); c != n-1 {
		t.Errorf("results cache=%v, want %d", c, n-1)
	}
	// The reverse path names the same device and resource: same entry.
	out, code := run(t, 20*time.Second, ".", client, "-m", "get", b.coapURL("/devices/lib/example_data"))
	if code != 0 || !strings.Contains(out, "cached-1") {
		t.Fatalf("reverse GET: exit %d %q", code, out)
	}
	if d := series(t, b, devReqs) - before; d != 1 {
		t.Errorf("reverse GET asked the device (%v requests), want the forward GETs' entry", d)
	}
	hits := metric(t, b, "bridge_proxy_cache_hits_total") - hits0
	t.Logf("%d proxied GETs (forward) + 1 reverse: device asked %v time(s), cache hits %v, hit ratio %.1f%%, device requests saved %d",
		n, series(t, b, devReqs)-before, hits, 100*hits/(n+1), n+1-int(series(t, b, devReqs)-before))
}

// timeLine matches a /time representation of libcoap's server.
var timeLine = regexp.MustCompile(`[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d`)

// TestE2EProxyLibcoapObserve: 50 coap-client observers of coap-server's
// /time through the forward proxy cost the device one observation; every
// observer gets notifications; when they are gone the bridge ends its
// observation. Without the shared upstream observation the device would
// see 50 registrations (upstream_observations would stay 0 and the device
// requests count 50); without noticing gone observers it would stay 1.
func TestE2EProxyLibcoapObserve(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	dev := startCoapServer(t)
	b := startBridgeBin(t, bridgeSetup{rules: proxyDeviceRules(dev, "")})
	before := series(t, b, devReqs)
	const n = 50
	var obs []*proc
	for i := 0; i < n; i++ {
		obs = append(obs, start(t, ".", nil, client, "-s", "60", "-P", b.coapURL(""), "-m", "get", "coap://lib/time"))
	}
	distinct := func(p *proc) int {
		seen := map[string]bool{}
		for _, m := range timeLine.FindAllString(p.out.String(), -1) {
			seen[m] = true
		}
		return len(seen)
	}
	testkit.Eventually(t, 15*time.Second, "every observer to get 3 distinct times", func() bool {
		for _, p := range obs {
			if distinct(p) < 3 {
				return false
			}
		}
		return true
	})
	if u := metric(t, b, upstreamObs); u != 1 {
		t.Errorf("%s = %v while %d clients observe, want 1", upstreamObs, u, n)
	}
	if d := series(t, b, devReqs) - before; d != 1 {
		t.Errorf("device got %v proxied requests for %d observers, want 1 (the registration)", d, n)
	}
	t.Logf("%d observers: device requests %v, results %v cache / %v device", n, series(t, b, devReqs)-before,
		series(t, b, proxyResult("cache")), series(t, b, proxyResult("device")))
	// Gone without a word: the bridge learns it from the RST (or ICMP)
	// answering a later notification.
	for _, p := range obs {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	gone := time.Now()
	testkit.Eventually(t, 20*time.Second, "the upstream observation to end", func() bool { return metric(t, b, upstreamObs) == 0 })
	t.Logf("upstream observation ended %v after the observers were killed", time.Since(gone).Round(100*time.Millisecond))
}

// rawRequest sends a CON request with opts to addr from its own socket and
// returns the answer; a 4.01 with an Echo is repeated with the Echo
// (RFC 9175) as a client would.
func rawRequest(t *testing.T, addr string, code message.Code, opts message.Options) *message.Message {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for try := 0; try < 2; try++ {
		req := &message.Message{Type: message.Confirmable, Code: code, MessageID: uint16(0x4000 + try), Token: []byte{0xe2, byte(try)}, Options: opts}
		data, err := req.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(data); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no answer from %s: %v", addr, err)
		}
		var resp message.Message
		if err := resp.Unmarshal(buf[:n]); err != nil {
			t.Fatal(err)
		}
		echo, ok := resp.Options.Get(message.Echo)
		if resp.Code != message.Unauthorized || !ok {
			return &resp
		}
		opts = opts.Add(message.Echo, slices.Clone(echo))
	}
	t.Fatalf("%s kept asking for an Echo", addr)
	return nil
}

// wantCode runs coap-client and checks the code it prints.
func wantCode(t *testing.T, want string, client string, args ...string) {
	t.Helper()
	out, _ := run(t, 20*time.Second, ".", client, args...)
	if !strings.Contains(out, want) {
		t.Errorf("coap-client %s: %q, want %s", strings.Join(args, " "), out, want)
	}
}

// TestE2EProxyRefusals: forward-proxy requests the bridge must not carry
// out are refused with the code the README gives, and reach no device. An
// open proxy would send them on (device requests > 0) or time out.
func TestE2EProxyRefusals(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	dev := peer.StartCoapServerProcess(t)
	b := startBridgeBin(t, bridgeSetup{rules: proxyDeviceRules(dev.Addr.Port, "")})
	before := series(t, b, devReqs)
	bridge := b.coapURL("")
	wantCode(t, "4.03", client, "-P", bridge, "-m", "get", "coap://nobody/x")
	// An address that is no device (the test's own free port): 4.03.
	wantCode(t, "4.03", client, "-P", bridge, "-m", "get", fmt.Sprintf("coap://127.0.0.1:%d/x", peer.FreeUDPPort(t)))
	// Its device's address is the device: this one goes through.
	wantCode(t, "Dec", client, "-P", bridge, "-m", "get", fmt.Sprintf("coap://127.0.0.1:%d/time", dev.Addr.Port))
	asked := series(t, b, devReqs) - before
	if asked != 1 {
		t.Errorf("device requests %v after the refusals and one GET by address, want 1", asked)
	}
	wantCode(t, "4.05", client, "-P", bridge, "-m", "delete", "coap://lib/time")
	// libcoap will not send an http:// Proxy-Uri itself: a raw datagram.
	addr := fmt.Sprintf("127.0.0.1:%d", b.coapPort)
	if r := rawRequest(t, addr, message.GET, message.Options{}.AddString(message.ProxyURI, "http://lib/time")); r.Code != message.ProxyingNotSupported {
		t.Errorf("Proxy-Uri http://lib/time: %v, want 5.05", r.Code)
	}
	if d := series(t, b, devReqs) - before; d != asked {
		t.Errorf("device requests went from %v to %v: a refused request reached the device", asked, d)
	}
	// A bridge without a forward rule: every forward-proxy request is 5.05.
	b2 := startBridgeBin(t, bridgeSetup{rules: fmt.Sprintf(`
[[device]]
name = "lib"
url  = "coap://127.0.0.1:%d"

[[proxy]]
name = "devices"
path = "/devices/{device}/{path...}"
url  = "coap://{device}/{path...}"
`, dev.Addr.Port)})
	wantCode(t, "5.05", client, "-P", b2.coapURL(""), "-m", "get", "coap://lib/time")
	if r := rawRequest(t, fmt.Sprintf("127.0.0.1:%d", b2.coapPort), message.GET, message.Options{}.AddString(message.ProxyURI, "coap://lib/time")); r.Code != message.ProxyingNotSupported {
		t.Errorf("bridge without forward rule, raw Proxy-Uri: %v, want 5.05", r.Code)
	}
	if d := series(t, b2, devReqs); d != 0 {
		t.Errorf("bridge without forward rule asked the device %v times", d)
	}
}

// curl runs curl -s -i and returns the status, headers (lower-case names)
// and body.
func curl(t *testing.T, bin string, args ...string) (int, http.Header, string) {
	t.Helper()
	out, code := run(t, 20*time.Second, ".", bin, append([]string{"-s", "-i"}, args...)...)
	if code != 0 {
		t.Fatalf("curl %v: exit %d %s", args, code, out)
	}
	head, body, _ := strings.Cut(out, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	f := strings.Fields(lines[0])
	if len(f) < 2 {
		t.Fatalf("curl: status line %q", lines[0])
	}
	status, _ := strconv.Atoi(f[1])
	h := http.Header{}
	for _, l := range lines[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok {
			h.Add(k, strings.TrimSpace(v))
		}
	}
	return status, h, body
}

// TestE2EProxyHTTPCurl: curl reaches coap-server through /coap/: the
// representation with its Content-Type and freshness, a second GET from
// the cache, a PUT that changes the resource and makes the entry stale,
// 404 for an unknown device. A PUT that did not invalidate would leave the
// following GET answering the old value from the cache (X-Cache: HIT).
func TestE2EProxyHTTPCurl(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	curlBin := peer.Require(t, "curl")
	dev := startCoapServer(t)
	putDirect(t, client, dev, "before")
	b := startBridgeBin(t, bridgeSetup{rules: proxyDeviceRules(dev, "")})
	url := fmt.Sprintf("http://127.0.0.1:%d/coap/lib/example_data", b.httpPort)
	before := series(t, b, devReqs)

	st, h, body := curl(t, curlBin, url)
	t.Logf("first GET: %d %v %q", st, h, body)
	// coap-server keeps no Content-Format for /example_data: RFC 8075
	// §6.1 makes that application/octet-stream.
	if st != 200 || body != "before" || h.Get("Content-Type") != "application/octet-stream" || h.Get("X-Cache") != "MISS" {
		t.Errorf("first GET: %d %q Content-Type %q X-Cache %q, want 200 \"before\" application/octet-stream MISS", st, body, h.Get("Content-Type"), h.Get("X-Cache"))
	}
	if !strings.Contains(h.Get("Cache-Control"), "max-age=") {
		t.Errorf("first GET: Cache-Control %q, want max-age (60: the device sent no Max-Age)", h.Get("Cache-Control"))
	}
	st, h, body = curl(t, curlBin, url)
	if st != 200 || body != "before" || h.Get("X-Cache") != "HIT" || !strings.Contains(h.Get("Cache-Control"), "max-age=") {
		t.Errorf("second GET: %d %q X-Cache %q Cache-Control %q, want 200 \"before\" HIT max-age", st, body, h.Get("X-Cache"), h.Get("Cache-Control"))
	}
	if d := series(t, b, devReqs) - before; d != 1 {
		t.Errorf("device requests %v after two GETs, want 1", d)
	}

	st, _, body = curl(t, curlBin, "-X", "PUT", "-H", "Content-Type: text/plain", "--data-binary", "after", url)
	if st != 204 && st != 200 {
		t.Errorf("PUT: %d %q, want 204 or 200", st, body)
	}
	st, h, body = curl(t, curlBin, url)
	if st != 200 || body != "after" || h.Get("X-Cache") != "MISS" {
		t.Errorf("GET after PUT: %d %q X-Cache %q, want 200 \"after\" MISS (the PUT makes the entry stale)", st, body, h.Get("X-Cache"))
	}
	if st, _, body = curl(t, curlBin, fmt.Sprintf("http://127.0.0.1:%d/coap/nobody/x", b.httpPort)); st != 404 {
		t.Errorf("unknown device: %d %q, want 404", st, body)
	}
}

// coapGet GETs url with c.
func coapGet(t *testing.T, c *coapside.Client, url string) *coapside.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp
}

func newClient(t *testing.T) *coapside.Client {
	t.Helper()
	c, err := coapside.NewClient(coapside.ClientOptions{LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestE2EProxySleepyFromCache: a `bridge sim --push --sleep` device is
// proxied while awake; asleep, a GET is answered from the cache without
// waking it; past Max-Age, stale = "refuse" answers 5.03 and
// stale = "serve" the last value with Max-Age 0. A proxy that woke
// sleeping devices would count device requests while it sleeps (and the
// GET would time out); without the cache the asleep GET would be 5.03.
func TestE2EProxySleepyFromCache(t *testing.T) {
	// Max-Age is two intervals: 6 s. The device wakes every 12 s for 3 s;
	// the bridge holds it awake 2.1 s after each push.
	const interval, sleep, awake = 3 * time.Second, 12 * time.Second, 3 * time.Second
	rules := `
[[ingress]]
name    = "uplink"
path    = "/up/{device}/{metric}"
methods = ["POST"]
topic   = "up/{device}/{metric}"

[[proxy]]
name    = "devices"
path    = "/devices/{device}/{path...}"
url     = "coap://{device}/{path...}"
timeout = "2s"
http    = true

[[proxy]]
name    = "serve"
path    = "/stale/{device}/{path...}"
url     = "coap://{device}/{path...}"
timeout = "2s"
stale   = "serve"
`
	b := startBridgeBin(t, bridgeSetup{rules: rules, extra: awakeConfig(awake)})
	port := freeUDPRange(t, 1)
	sim := start(t, ".", nil, bridgeBin(t), "sim", "--devices", "1", "--name-prefix", "sleepy-",
		"--base-port", strconv.Itoa(port), "--listen-host", "127.0.0.1", "--interval", interval.String(),
		"--push", b.coapURL("/up/{device}/{metric}"), "--sleep", sleep.String(), "--awake", awake.String())
	c := newClient(t)
	wakes := func() int { return strings.Count(sim.out.String(), `msg="sim device awake"`) }
	// The device wakes as it starts: GET both paths while the bridge
	// holds it awake (right after its push). Before the push the bridge
	// does not know it (4.03), which the loop below waits out.
	testkit.Eventually(t, 20*time.Second, "sleepy-0 awake", func() bool { return wakes() >= 1 })
	n := wakes()
	var woke time.Time
	for _, p := range []string{"/devices", "/stale"} {
		testkit.Eventually(t, awake, "GET answered by the awake device", func() bool {
			r := coapGet(t, c, b.coapURL(p+"/sleepy-0/sensors/temp"))
			if woke.IsZero() && r.Code == message.Content {
				woke = time.Now()
			}
			return r.Code == message.Content
		})
	}
	reqs := func() float64 {
		return series(t, b, `bridge_proxy_device_requests_total{rule="devices"}`) + series(t, b, `bridge_proxy_device_requests_total{rule="serve"}`)
	}
	// The cache key is the device and its resource, whatever the rule:
	// the second rule's GET is the first one's entry.
	asked := reqs()
	if asked != 1 {
		t.Fatalf("device requests %v after two GETs while awake, want 1", asked)
	}
	// Asleep (the bridge's window is 2.1 s), within the 6 s Max-Age.
	time.Sleep(time.Until(woke.Add(3500 * time.Millisecond)))
	for _, p := range []string{"/devices", "/stale"} {
		r := coapGet(t, c, b.coapURL(p+"/sleepy-0/sensors/temp"))
		if r.Code != message.Content || r.Options.MaxAge() == 0 || r.Options.MaxAge() > 6 {
			t.Errorf("%s asleep within Max-Age: %v Max-Age %d, want 2.05 from the cache with the freshness left", p, r.Code, r.Options.MaxAge())
		}
	}
	if d := reqs() - asked; d != 0 {
		t.Errorf("%v device requests while it sleeps, want 0", d)
	}
	// Past Max-Age, still asleep (the next wake is 12 s after the last).
	time.Sleep(time.Until(woke.Add(7500 * time.Millisecond)))
	if wakes() > n+1 {
		t.Fatal("device woke again before the stale GETs: timing too tight on this machine")
	}
	r := coapGet(t, c, b.coapURL("/devices/sleepy-0/sensors/temp"))
	if r.Code != message.ServiceUnavailable {
		t.Errorf("refuse past Max-Age: %v %q, want 5.03", r.Code, r.Payload)
	}
	t.Logf("refuse: %v Max-Age %d", r.Code, r.Options.MaxAge())
	// Over HTTP (RFC 8075 §7): 503 with Retry-After from the Max-Age.
	hr, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/coap/sleepy-0/sensors/temp", b.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != http.StatusServiceUnavailable || hr.Header.Get("Retry-After") == "" {
		t.Errorf("HTTP GET asleep past Max-Age: %d Retry-After %q, want 503 with Retry-After", hr.StatusCode, hr.Header.Get("Retry-After"))
	}
	r = coapGet(t, c, b.coapURL("/stale/sleepy-0/sensors/temp"))
	if r.Code != message.Content || !r.Options.Has(message.MaxAge) || r.Options.MaxAge() != 0 || len(r.Payload) == 0 {
		t.Errorf("serve past Max-Age: %v Max-Age %d (present %v) %q, want 2.05 with Max-Age 0", r.Code, r.Options.MaxAge(), r.Options.Has(message.MaxAge), r.Payload)
	}
	if d := reqs() - asked; d != 0 {
		t.Errorf("%v device requests while it sleeps, want 0", d)
	}
	t.Logf("results devices: cache %v refused %v; serve: cache %v stale %v",
		series(t, b, proxyResult("cache")), series(t, b, proxyResult("refused")),
		series(t, b, `bridge_proxy_requests_total{result="cache",rule="serve"}`), series(t, b, `bridge_proxy_requests_total{result="stale",rule="serve"}`))
}

// TestE2EProxyLatency measures (no assertion on time) the latency of GETs
// of coap-server's resource: direct, through the reverse proxy from the
// cache, and through a proxy rule without cache.
func TestE2EProxyLatency(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	dev := startCoapServer(t)
	putDirect(t, client, dev, "latency")
	b := startBridgeBin(t, bridgeSetup{rules: proxyDeviceRules(dev, `
[[proxy]]
name  = "nocache"
path  = "/nocache/{device}/{path...}"
url   = "coap://{device}/{path...}"
cache = false
`)})
	c := newClient(t)
	const n = 200
	cases := []struct{ name, url string }{
		{"direct", fmt.Sprintf("coap://127.0.0.1:%d/example_data", dev)},
		{"proxy, cache hits", b.coapURL("/devices/lib/example_data")},
		{"proxy, cache = false", b.coapURL("/nocache/lib/example_data")},
	}
	var base time.Duration
	var table strings.Builder
	fmt.Fprintf(&table, "%-38s %10s %10s %8s\n", "path (N=200 sequential, interleaved)", "median", "p99", "x direct")
	for _, cs := range cases {
		coapGet(t, c, cs.url) // warm up: Echo, the first cache fill
	}
	// Interleaved, so that a noisy moment of the machine weighs on all
	// three alike.
	lats := make([][]time.Duration, len(cases))
	for i := 0; i < n; i++ {
		for j, cs := range cases {
			start := time.Now()
			r := coapGet(t, c, cs.url)
			lats[j] = append(lats[j], time.Since(start))
			if r.Code != message.Content {
				t.Fatalf("GET %s: %v", cs.url, r.Code)
			}
		}
	}
	for i, cs := range cases {
		lat := lats[i]
		slices.Sort(lat)
		med, p99 := lat[n/2], lat[n*99/100-1]
		if i == 0 {
			base = med
		}
		fmt.Fprintf(&table, "%-38s %10v %10v %8.2f\n", cs.name, med.Round(time.Microsecond), p99.Round(time.Microsecond), float64(med)/float64(base))
	}
	t.Logf("latency of GET (shared 2-core VM, noisy):\n%s", table.String())
	if d := series(t, b, `bridge_proxy_device_requests_total{rule="devices"}`); d != 1 {
		t.Errorf("cached path asked the device %v times, want 1", d)
	}
}

// TestE2EProxyHTTPBlockwiseETag: coap-server's initial /example_data (1500
// bytes in Block2, ETag 0x01) reaches curl whole, with its ETag; curl
// sending that ETag back in If-None-Match gets 304 from the cache. A proxy
// that relayed only the first block would answer 1024 bytes; one that lost
// the ETag would answer 200 again.
func TestE2EProxyHTTPBlockwiseETag(t *testing.T) {
	curlBin := peer.Require(t, "curl")
	dev := startCoapServer(t)
	b := startBridgeBin(t, bridgeSetup{rules: proxyDeviceRules(dev, "")})
	url := fmt.Sprintf("http://127.0.0.1:%d/coap/lib/example_data", b.httpPort)
	st, h, body := curl(t, curlBin, url)
	if st != 200 || len(body) != 1500 || !strings.HasPrefix(body, "a123456789") {
		t.Fatalf("GET: %d, %d bytes %.20q..., want 200 with coap-server's 1500 bytes", st, len(body), body)
	}
	etag := h.Get("ETag")
	if etag == "" {
		t.Fatalf("GET: no ETag header (coap-server sent ETag 0x01): %v", h)
	}
	st, h, body = curl(t, curlBin, "-H", "If-None-Match: "+etag, url)
	if st != 304 || body != "" || h.Get("X-Cache") != "HIT" {
		t.Errorf("GET If-None-Match %s: %d X-Cache %q %d bytes, want 304 from the cache", etag, st, h.Get("X-Cache"), len(body))
	}
	if d := series(t, b, devReqs); d != 1 {
		t.Errorf("device requests %v, want 1", d)
	}
}
