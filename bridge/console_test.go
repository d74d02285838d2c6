package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// consoleGet fetches path from the bridge's HTTP side and decodes JSON
// into v (when v is not nil); it returns the body.
func consoleGet(t *testing.T, tb *testBridge, path string, v any) string {
	t.Helper()
	resp, err := http.Get("http://" + tb.HTTPAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
	}
	return string(body)
}

// TestConsoleShowsRulesDevicesErrors: with a running bridge, the status
// API counts a rule's messages, filtered messages and errors, lists the
// device that pushed with its presence, address and last request, and
// the recent errors name the rule, device, reason and CoAP code. No
// output carries the keys of the rules or the psk_file.
func TestConsoleShowsRulesDevicesErrors(t *testing.T) {
	const deviceKey, listenerKey = "device-key-not-shown", "listener-key-not-shown"
	pskFile := filepath.Join(t.TempDir(), "psk.toml")
	if err := os.WriteFile(pskFile, []byte("[[psk]]\nidentity = \"d9\"\nkey = \""+listenerKey+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, ingressRules+`
[[device]]
name         = "secure-1"
url          = "coaps://127.0.0.1:1"
psk_identity = "bridge-identity"
psk          = "`+deviceKey+`"
`, func(c *Config, _ *Options) {
		c.Devices.PresenceTopic = "devices/{device}/status"
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
	})
	c := newCoAPClient(t)
	ctx := context.Background()
	post := func(path, payload string, want message.Code) {
		t.Helper()
		cf := message.TextPlain
		switch {
		case strings.HasPrefix(path, "/json/"):
			cf = message.AppCBOR
		case strings.HasPrefix(path, "/hot/"):
			cf = message.AppJSON
		}
		resp, err := c.Post(ctx, tb.coapURL(path), cf, []byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code != want {
			t.Fatalf("POST %s: %v, want %v", path, resp.Code, want)
		}
	}
	post("/telemetry/dev1/temp", "21.5", message.Changed)
	post("/telemetry/dev1/temp", "21.6", message.Changed)
	post("/json/dev2", "\xff\x00\x13", message.UnsupportedContentFormat)
	post("/hot/dev3", `{"temp": 20}`, message.Changed) // filtered

	var st ConsoleStatus
	consoleGet(t, tb, "/api/status", &st)
	rule := func(name string) ConsoleRule {
		for _, r := range st.Rules {
			if r.Name == name {
				return r
			}
		}
		t.Fatalf("rule %s not in %+v", name, st.Rules)
		return ConsoleRule{}
	}
	if r := rule("telemetry"); r.Messages != 2 || r.Kind != "ingress" || r.LastError != nil {
		t.Errorf("telemetry: %+v, want 2 messages, no error", r)
	}
	if r := rule("hot"); r.Filtered != 1 {
		t.Errorf("hot: %+v, want 1 filtered", r)
	}
	r := rule("json")
	if r.Errors != 1 || r.LastError == nil || r.LastError.Reason != reasonConvert || r.LastError.Device != "dev2" || r.LastError.CoAPCode != "4.15" {
		t.Errorf("json: %+v (last error %+v), want 1 convert error from dev2 answered 4.15", r, r.LastError)
	}
	if st.ErrorsTotal != 1 || len(st.Errors) != 1 || st.Errors[0].Rule != "json" {
		t.Errorf("errors: %d %+v, want the json rule's", st.ErrorsTotal, st.Errors)
	}
	if !st.MQTT.Connected || st.MQTT.Broker != "embedded" || st.Cluster != nil {
		t.Errorf("mqtt %+v cluster %+v: want connected to the embedded broker, no cluster", st.MQTT, st.Cluster)
	}
	if d := st.Devices; !d.Presence || d.Total != 4 || d.Listed != 1 || d.Learned != 3 || d.Online != 3 {
		t.Errorf("devices %+v: want 3 learned online and 1 listed", d)
	}

	var page ConsoleDevices
	consoleGet(t, tb, "/api/devices?q=DEV1", &page)
	if page.Total != 1 || len(page.Devices) != 1 {
		t.Fatalf("q=DEV1: %+v, want dev1 only", page)
	}
	d := page.Devices[0]
	if d.Name != "dev1" || d.State != "online" || !d.Learned || d.Via != "udp" || !strings.HasPrefix(d.Address, "127.0.0.1:") ||
		d.LastSeen == nil || time.Since(*d.LastSeen) > time.Minute {
		t.Errorf("dev1: %+v", d)
	}
	// The last request, not the presence document's time: a new uplink
	// moves it though the state holds.
	before := *d.LastSeen
	time.Sleep(5 * time.Millisecond) // the clock must move for the times to differ
	post("/telemetry/dev1/temp", "21.7", message.Changed)
	consoleGet(t, tb, "/api/devices?q=dev1", &page)
	if got := page.Devices[0].LastSeen; got == nil || !got.After(before) {
		t.Errorf("dev1 last seen %v after a new uplink, want after %v", got, before)
	}
	consoleGet(t, tb, "/api/devices?state=unknown", &page)
	if page.Total != 1 || page.Devices[0].Name != "secure-1" || page.Devices[0].Address != "127.0.0.1:1" || page.Devices[0].Via != "dtls" {
		t.Errorf("state=unknown: %+v, want the listed device, never heard from", page)
	}

	var errs struct {
		Total  uint64
		Errors []RecentError
	}
	consoleGet(t, tb, "/api/errors", &errs)
	if errs.Total != 1 || len(errs.Errors) != 1 || !strings.Contains(errs.Errors[0].Error, "conversion failed") {
		t.Errorf("errors: %+v", errs)
	}

	for _, path := range []string{"/", "/console/app.js", "/console/style.css", "/api/status", "/api/devices?limit=500", "/api/errors"} {
		body := consoleGet(t, tb, path, nil)
		for _, secret := range []string{deviceKey, listenerKey, "bridge-identity"} {
			if strings.Contains(body, secret) {
				t.Errorf("GET %s shows %q", path, secret)
			}
		}
	}
}

// TestConsoleReadOnlyAndOff: the console answers GET only, sets a
// content security policy that forbids inline scripts, and http.console
// = false leaves only /metrics, /healthz and /readyz.
func TestConsoleReadOnlyAndOff(t *testing.T) {
	tb := startBridge(t, ingressRules, nil)
	base := "http://" + tb.HTTPAddr().String()
	resp, err := http.Post(base+"/api/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/status: %s, want 405", resp.Status)
	}
	resp, err = http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("GET /: Content-Security-Policy %q", csp)
	}

	off := false
	tb2 := startBridge(t, ingressRules, func(c *Config, _ *Options) { c.HTTP.Console = &off })
	for path, want := range map[string]int{"/": 404, "/api/status": 404, "/console/app.js": 404, "/metrics": 200, "/readyz": 200} {
		resp, err := http.Get("http://" + tb2.HTTPAddr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("console off: GET %s: %s, want %d", path, resp.Status, want)
		}
	}
}

// TestConsoleBrokerCredentials: the broker's user and password are not
// shown.
func TestConsoleBrokerCredentials(t *testing.T) {
	cfg, _ := ruleFileConfig(t, ingressRules)
	useRemoteBroker(&cfg, "127.0.0.1:1", "console")
	cfg.MQTT.Broker = "tcp://operator:hunter2@127.0.0.1:1"
	cfg.MQTT.Username, cfg.MQTT.Password = "operator2", "hunter3"
	b, err := NewWithOptions(cfg, Options{noFileWatch: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	b.http.srv.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/api/status", nil))
	body := rec.Body.String()
	for _, s := range []string{"hunter", "operator"} {
		if strings.Contains(body, s) {
			t.Errorf("/api/status shows %q: %s", s, body)
		}
	}
	if !strings.Contains(body, `"broker":"tcp://127.0.0.1:1"`) {
		t.Errorf("/api/status does not name the broker: %s", body)
	}
}

// fleetBridge returns a bridge (not running) that has learned n devices,
// tracked by presence: every tenth offline, every third of the rest
// asleep.
func fleetBridge(t testing.TB, n int) *Bridge {
	cfg := Defaults()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.toml"), []byte(ingressRules), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.File = filepath.Join(dir, "config.toml")
	cfg.Rules = []string{"rules.toml"}
	cfg.Devices.PresenceTopic = "devices/{device}/status"
	b, err := NewWithOptions(cfg, Options{noFileWatch: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range n {
		name := fmt.Sprintf("field-sensor-%06d", i)
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5683)
		seen := now
		if i%3 == 0 {
			seen = now.Add(-2 * b.presence.awake) // asleep at the expiry below
		}
		b.learned.learn(name, addr, nil, ViaUDP, false, seen)
		if i%10 == 0 {
			b.presence.unreachable(name, context.DeadlineExceeded, time.Now())
		}
	}
	if _, more := b.presence.expire(now, n); more {
		t.Fatal("presence expiry stopped early")
	}
	return b
}

// TestConsoleDevicesPaging: /api/devices pages a fleet by name, never more
// than consoleMaxLimit at once, filters by name and state, and refuses bad
// parameters.
func TestConsoleDevicesPaging(t *testing.T) {
	const n = 2345
	b := fleetBridge(t, n)
	get := func(query string, wantCode int) ConsoleDevices {
		t.Helper()
		rec := httptest.NewRecorder()
		b.http.srv.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/api/devices"+query, nil))
		if rec.Code != wantCode {
			t.Fatalf("%s: %d %s, want %d", query, rec.Code, rec.Body, wantCode)
		}
		var page ConsoleDevices
		if wantCode == 200 {
			if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
				t.Fatal(err)
			}
		}
		return page
	}
	p := get("", 200)
	if p.Total != n || len(p.Devices) != consoleDefaultLimit || p.Devices[0].Name != "field-sensor-000000" {
		t.Fatalf("first page: total %d, %d devices, first %+v", p.Total, len(p.Devices), p.Devices[0])
	}
	p = get("?offset=2300&limit=100000", 200)
	if p.Limit != consoleMaxLimit || len(p.Devices) != n-2300 || p.Devices[0].Name != "field-sensor-002300" {
		t.Fatalf("last page: limit %d, %d devices", p.Limit, len(p.Devices))
	}
	if p = get("?limit=100000", 200); len(p.Devices) != consoleMaxLimit {
		t.Fatalf("limit 100000 gave %d devices, want %d", len(p.Devices), consoleMaxLimit)
	}
	if p = get("?offset=5000", 200); p.Total != n || len(p.Devices) != 0 {
		t.Fatalf("past the end: %+v", p)
	}
	p = get("?q=SENSOR-0012&limit=500", 200)
	if p.Total != 100 || p.Devices[99].Name != "field-sensor-001299" {
		t.Fatalf("q=SENSOR-0012: total %d", p.Total)
	}
	p = get("?state=offline&limit=500", 200)
	if p.Total != (n+9)/10 {
		t.Fatalf("offline: %d, want %d", p.Total, (n+9)/10)
	}
	for _, d := range p.Devices {
		if d.State != "offline" || d.Reason != offlineTimeout {
			t.Fatalf("state=offline lists %+v", d)
		}
	}
	asleep := get("?state=asleep", 200).Total
	online := get("?state=online", 200).Total
	if asleep == 0 || online == 0 || asleep+online+(n+9)/10 != n {
		t.Fatalf("asleep %d + online %d + offline %d != %d", asleep, online, (n+9)/10, n)
	}
	rec := httptest.NewRecorder()
	b.http.srv.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/api/status", nil))
	var st ConsoleStatus
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if d := st.Devices; d.Total != n || d.Online != online || d.Asleep != asleep || d.Offline != (n+9)/10 {
		t.Fatalf("status counts %+v, want online %d asleep %d", d, online, asleep)
	}
	for _, q := range []string{"?offset=-1", "?limit=0", "?limit=x", "?state=sleepy"} {
		get(q, 400)
	}
}

// TestRecentErrors: the ring keeps the newest recentErrorsSize errors,
// newest first; an error repeating within a second is counted on its
// latest entry without allocating, and enters again after.
func TestRecentErrors(t *testing.T) {
	r := newRecentErrors()
	now := time.Unix(1_700_000_000, 0)
	r.now = func() time.Time { return now }
	for i := range recentErrorsSize + 10 {
		r.add(fmt.Sprintf("rule-%d", i), reasonConvert, errorDetail{device: "d", code: message.BadRequest})
	}
	list, total := r.list(recentErrorsSize * 2)
	if len(list) != recentErrorsSize || total != recentErrorsSize+10 {
		t.Fatalf("%d entries, total %d", len(list), total)
	}
	if list[0].Rule != fmt.Sprintf("rule-%d", recentErrorsSize+9) || list[len(list)-1].Rule != "rule-10" || list[0].CoAPCode != "4.00" {
		t.Fatalf("newest %+v, oldest %+v", list[0], list[len(list)-1])
	}
	last := r.latestPer([]string{"rule-265", "rule-3", "nope"})
	if len(last) != 1 || last["rule-265"].Rule != "rule-265" {
		t.Fatalf("latest per rule: %+v, want rule-265 only (rule-3 left the ring)", last)
	}

	err := fmt.Errorf("broker refused: %s", strings.Repeat("x", 1000))
	allocs := testing.AllocsPerRun(1000, func() {
		r.add("flood", reasonPublish, errorDetail{device: "d", err: err})
	})
	if allocs != 0 {
		t.Errorf("a repeated error allocates %v times", allocs)
	}
	list, _ = r.list(1)
	if list[0].Rule != "flood" || list[0].Repeats != 1000 || len(list[0].Error) > recentErrorDetailMax+len("…") {
		t.Fatalf("flood entry %+v", list[0])
	}
	now = now.Add(recentErrorEvery)
	r.add("flood", reasonPublish, errorDetail{device: "d2", errText: "again"})
	list, _ = r.list(2)
	if list[0].Device != "d2" || list[0].Repeats != 0 || list[1].Repeats != 1000 {
		t.Fatalf("after a second: %+v", list)
	}
	// A (rule, reason) whose entry was pushed out of the ring enters again.
	for i := range recentErrorsSize {
		r.add(fmt.Sprintf("other-%d", i), reasonCoAP, errorDetail{})
	}
	r.add("flood", reasonPublish, errorDetail{errText: "back"})
	if list, _ = r.list(1); list[0].Rule != "flood" || list[0].Error != "back" {
		t.Fatalf("after the ring wrapped: %+v", list[0])
	}
}

// BenchmarkConsole10k measures the API behind one live update of the
// status page with 10,000 devices: /api/status and a 50-device page of
// /api/devices, filtered by name (the costliest query).
func BenchmarkConsole10k(b *testing.B) {
	br := fleetBridge(b, 10_000)
	h := br.http.srv.Handler
	for _, path := range []string{"/api/status", "/api/devices?limit=50", "/api/devices?limit=50&q=sensor-00&state=online"} {
		b.Run(strings.TrimPrefix(path, "/api/"), func(b *testing.B) {
			var bytes int
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
				bytes = rec.Body.Len()
			}
			b.ReportMetric(float64(bytes), "body-bytes")
		})
	}
}

// TestConsoleRates: rates are the counters' increase per second over the
// latest window of at least consoleRateWindow; requests within a window
// share its rates.
func TestConsoleRates(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := &console{now: func() time.Time { return now }}
	if r := c.ratesFor(map[string]ruleCounts{"a": {messages: 100}}); r["a"] != (ruleRates{}) {
		t.Fatalf("first sample: %+v, want no rates", r)
	}
	now = now.Add(2 * time.Second)
	r := c.ratesFor(map[string]ruleCounts{"a": {messages: 110, errors: 1, filtered: 3}})
	if want := (ruleRates{messages: 5, errors: 0.5, filtered: 1.5}); r["a"] != want {
		t.Fatalf("after 2s: %+v, want %+v", r["a"], want)
	}
	now = now.Add(consoleRateWindow / 2)
	if r := c.ratesFor(map[string]ruleCounts{"a": {messages: 500}}); r["a"].messages != 5 {
		t.Fatalf("within the window: %+v, want the window's rates", r["a"])
	}
	now = now.Add(consoleRateWindow)
	if r := c.ratesFor(map[string]ruleCounts{"a": {messages: 50}}); r["a"].messages != 0 {
		t.Fatalf("a counter that went down (rule re-added): %+v, want 0", r["a"])
	}
}

// TestConsoleObservationHealth: a device's observations on /api/devices
// count the re-registrations after Max-Age and the observations
// established again after one was lost (the device went away and came
// back).
func TestConsoleObservationHealth(t *testing.T) {
	dev := startObservableDevice(t, "", 1)
	addr := dev.addr.String()
	tb := startBridge(t, observeRules(dev.addr), func(_ *Config, o *Options) {
		o.ReobserveMin, o.ReobserveMax = 50*time.Millisecond, 200*time.Millisecond
	})
	health := func() ObservationHealth {
		var page ConsoleDevices
		consoleGet(t, tb, "/api/devices?q=d1", &page)
		if len(page.Devices) != 1 || page.Devices[0].Observations == nil {
			t.Fatalf("d1 without observations: %+v", page)
		}
		return *page.Devices[0].Observations
	}
	testkit.Eventually(t, 5*time.Second, "observer", func() bool { return dev.obs.Observers("/sensors/temp") == 1 })
	if h := health(); h.Active != 1 || h.Reobserved != 0 {
		t.Fatalf("observing: %+v, want 1 active, none re-observed", h)
	}
	// Silent past Max-Age (1 s): the bridge registers again.
	testkit.Eventually(t, 10*time.Second, "re-registration counted", func() bool { return health().Reregistrations >= 1 })

	// Gone: the observation is lost; back: observed again.
	dev.srv.Close()
	dev.stop()
	testkit.Eventually(t, 15*time.Second, "observation lost", func() bool { return health().Active == 0 })
	dev2 := startObservableDevice(t, addr, 60)
	testkit.Eventually(t, 15*time.Second, "observed again", func() bool { return dev2.obs.Observers("/sensors/temp") == 1 })
	testkit.Eventually(t, 5*time.Second, "counted as re-observed", func() bool {
		h := health()
		return h.Active == 1 && h.Reobserved == 1 && h.Reregistrations >= 1
	})
}

// BenchmarkRecentErrorsFlood measures what the ring adds to an error
// repeating on every goroutine (a flood of one failure).
func BenchmarkRecentErrorsFlood(b *testing.B) {
	r := newRecentErrors()
	err := fmt.Errorf("broker refused")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.add("uplink", reasonPublish, errorDetail{device: "d1", err: err})
		}
	})
}

// TestBrokerCredentialsNotLogged: the start-up line names the broker
// without the user and password of its URL.
func TestBrokerCredentialsNotLogged(t *testing.T) {
	cfg, _ := ruleFileConfig(t, ingressRules)
	useRemoteBroker(&cfg, "127.0.0.1:1", "credentials")
	cfg.MQTT.Broker = "tcp://operator:hunter2@127.0.0.1:1"
	cfg.CoAP.Listen, cfg.HTTP.Listen = "127.0.0.1:0", "127.0.0.1:0"
	var out testkit.SyncBuffer
	b, err := NewWithOptions(cfg, Options{noFileWatch: true}, slog.New(slog.NewTextHandler(&out, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	testkit.Eventually(t, 10*time.Second, "bridge running logged", func() bool {
		return strings.Contains(out.String(), "bridge running")
	})
	cancel()
	<-done
	if s := out.String(); strings.Contains(s, "hunter2") {
		t.Errorf("the log shows the broker password:\n%s", s)
	} else if !strings.Contains(s, "broker=tcp://127.0.0.1:1") {
		t.Errorf("the start-up line does not name the broker:\n%s", s)
	}
}

// TestConsolePresenceWithoutTopic: the status page shows whether a device
// is online or asleep even when no presence documents are published.
func TestConsolePresenceWithoutTopic(t *testing.T) {
	tb := startBridge(t, presenceIngressRules, func(c *Config, _ *Options) {
		c.Devices.Awake, c.Devices.OfflineAfter = 300*time.Millisecond, time.Minute
	})
	c := newCoAPClient(t)
	resp, err := c.Post(context.Background(), tb.coapURL("/telemetry/quiet-1/temp"), message.TextPlain, []byte("21"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("push: %v %v", resp, err)
	}
	state := func() string {
		var page struct {
			Devices []ConsoleDevice `json:"devices"`
		}
		consoleGet(t, tb, "/api/devices?q=quiet-1", &page)
		if len(page.Devices) != 1 {
			t.Fatalf("devices %+v, want quiet-1 alone", page.Devices)
		}
		return page.Devices[0].State
	}
	if s := state(); s != "online" && s != "asleep" { // a slow machine may be past awake
		t.Fatalf("state %q right after a push, want online", s)
	}
	testkit.Eventually(t, 10*time.Second, "quiet-1 asleep", func() bool { return state() == "asleep" })
	if got := testutil.ToFloat64(tb.presence.publishes.WithLabelValues("published")); got != 0 {
		t.Errorf("%v presence documents published without devices.presence_topic", got)
	}
}

// TestConsoleShowsARejectedReload: while the rule files do not load, the
// status API says so, with each error at its file:line, and says the
// running rules are the ones loaded before; once they load again it says
// the reload was applied.
func TestConsoleShowsARejectedReload(t *testing.T) {
	tb := startBridge(t, ingressRules, func(_ *Config, o *Options) { o.ReloadSettle = 50 * time.Millisecond })
	var st ConsoleStatus
	consoleGet(t, tb, "/api/status", &st)
	if st.Reload != nil {
		t.Fatalf("reload before any: %+v", st.Reload)
	}
	running := len(st.Rules)
	tb.writeRules(t, ingressRules+"\n[[ingress]]\nname = \"broken\"\npath = \"/b/{x}\"\ntopik = \"b\"\n")
	testkit.Eventually(t, 5*time.Second, "rejected reload shown", func() bool {
		st = ConsoleStatus{}
		consoleGet(t, tb, "/api/status", &st)
		return st.Reload != nil && st.Reload.Result == reloadError
	})
	joined := strings.Join(st.Reload.Errors, "\n")
	if !strings.Contains(joined, "rules.toml:") || !strings.Contains(joined, `unknown key "topik"`) {
		t.Errorf("reload errors %q, want each at its file:line", st.Reload.Errors)
	}
	if st.Reload.Time.IsZero() {
		t.Error("rejected reload without its time")
	}
	if len(st.Rules) != running {
		t.Errorf("rules %+v, want the %d running before", st.Rules, running)
	}

	tb.writeRules(t, ingressRules+"\n# fixed\n")
	testkit.Eventually(t, 5*time.Second, "applied reload shown", func() bool {
		st = ConsoleStatus{}
		consoleGet(t, tb, "/api/status", &st)
		return st.Reload != nil && st.Reload.Result == reloadOK
	})
	if len(st.Reload.Errors) != 0 {
		t.Errorf("applied reload with errors %q", st.Reload.Errors)
	}
}
