package bridge

import (
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func TestLearnedDevicesLearnMoveSee(t *testing.T) {
	var events []LearnEvent
	l := newLearnedDevices(10, prometheus.NewRegistry(), func(ev LearnEvent) { events = append(events, ev) })
	ep := &coapside.Endpoint{}
	a1 := netip.MustParseAddrPort("192.0.2.1:40000")
	a2 := netip.MustParseAddrPort("192.0.2.1:40001")
	t0 := time.Unix(1000, 0)
	if k := l.learn("dev-1", a1, ep, ViaUDP, false, t0); k != Learned {
		t.Fatalf("first request: %v, want Learned", k)
	}
	if k := l.learn("dev-1", a1, ep, ViaUDP, false, t0.Add(time.Second)); k != Seen {
		t.Fatalf("same address: %v, want Seen", k)
	}
	if k := l.learn("dev-1", a2, ep, ViaUDP, false, t0.Add(2*time.Second)); k != Moved {
		t.Fatalf("new address (NAT rebinding): %v, want Moved", k)
	}
	d, ok := l.lookup("dev-1")
	if !ok || d.Addr != a2 || d.Endpoint != ep || d.Via != ViaUDP || !d.LastSeen.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("lookup after the move = %+v %v", d, ok)
	}
	if len(events) != 3 || events[2].Kind != Moved || events[2].From != a1 || events[2].Device.Addr != a2 {
		t.Fatalf("hook events = %+v", events)
	}
	if _, ok := l.lookup("dev-2"); ok {
		t.Fatal("a device never seen is known")
	}
	// A known device's request costs no allocation (and so keeps nothing
	// of the request's datagram).
	quiet := newLearnedDevices(10, nil, nil)
	quiet.learn("dev-1", a1, ep, ViaUDP, false, t0)
	name := string([]byte("dev-1"))
	if n := testing.AllocsPerRun(100, func() { quiet.learn(name, a2, ep, ViaUDP, false, t0) }); n != 0 {
		t.Errorf("learning a known device allocates %v times", n)
	}
}

// TestLearnedRestoredDeviceSeenNotMoved: a device restored from state.dir
// (its socket unknown) that pushes over UDP from its saved address is
// seen, not moved; from another address it moved.
func TestLearnedRestoredDeviceSeenNotMoved(t *testing.T) {
	l := newLearnedDevices(10, nil, nil)
	ep := &coapside.Endpoint{}
	a1 := netip.MustParseAddrPort("192.0.2.1:40000")
	t0 := time.Unix(1000, 0)
	if !l.restore("dev-1", a1, false, t0) || !l.restore("dev-2", a1, false, t0) {
		t.Fatal("not restored")
	}
	if k := l.learn("dev-1", a1, ep, ViaUDP, false, t0.Add(time.Second)); k != Seen {
		t.Fatalf("restored device from its address: %v, want Seen", k)
	}
	if d, _ := l.lookup("dev-1"); d.Endpoint != ep {
		t.Fatalf("its socket is not recorded: %+v", d)
	}
	if k := l.learn("dev-2", netip.MustParseAddrPort("192.0.2.1:40001"), ep, ViaUDP, false, t0.Add(time.Second)); k != Moved {
		t.Fatalf("restored device from a new address: %v, want Moved", k)
	}
}

// TestLearnedDevicesAuthenticatedNotMovedByClaim: a device learned over
// DTLS with its identity is not moved by a plain request naming it.
func TestLearnedDevicesAuthenticatedNotMovedByClaim(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newLearnedDevices(10, reg, nil)
	ep := &coapside.Endpoint{}
	real := netip.MustParseAddrPort("192.0.2.1:40000")
	thief := netip.MustParseAddrPort("198.51.100.9:5683")
	l.learn("lock", real, ep, ViaDTLS, true, time.Now())
	if k := l.learn("lock", thief, ep, ViaUDP, false, time.Now()); k != RefusedClaim {
		t.Fatalf("unauthenticated claim: %v, want RefusedClaim", k)
	}
	if d, _ := l.lookup("lock"); d.Addr != real || d.Via != ViaDTLS {
		t.Fatalf("after a claim the device is at %v over %v, want %v over dtls", d.Addr, d.Via, real)
	}
	if n := testutil.ToFloat64(l.refused.WithLabelValues("claim")); n != 1 {
		t.Errorf("refused claims counted %v, want 1", n)
	}
	moved := netip.MustParseAddrPort("192.0.2.1:40002")
	if k := l.learn("lock", moved, ep, ViaDTLS, true, time.Now()); k != Moved {
		t.Fatalf("authenticated move: %v, want Moved", k)
	}
}

func TestLearnedDevicesBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newLearnedDevices(2, reg, nil)
	a := netip.MustParseAddrPort("192.0.2.1:1")
	l.learn("a", a, nil, ViaUDP, false, time.Now())
	l.learn("b", a, nil, ViaUDP, false, time.Now())
	if k := l.learn("c", a, nil, ViaUDP, false, time.Now()); k != RefusedFull {
		t.Fatalf("third device in a registry of two: %v, want RefusedFull", k)
	}
	if _, ok := l.lookup("c"); ok {
		t.Fatal("a refused device was recorded")
	}
	// Known devices still move while the registry is full.
	b2 := netip.MustParseAddrPort("192.0.2.1:2")
	if k := l.learn("b", b2, nil, ViaUDP, false, time.Now()); k != Moved {
		t.Fatalf("known device in a full registry: %v, want Moved", k)
	}
	if n := testutil.ToFloat64(l.refused.WithLabelValues("full")); n != 1 {
		t.Errorf("refused (full) counted %v, want 1", n)
	}
	if n, err := testutil.GatherAndCount(reg, "bridge_learned_devices"); err != nil || n != 1 {
		t.Errorf("bridge_learned_devices: %d series, %v", n, err)
	}
}

// TestLearnedMemoryPerDevice measures the heap a learned device costs at
// 100k devices (names like "field-sensor-012345", IPv4 sources), alone and
// with presence tracking fed by the registry as the bridge wires it (every
// device's document waiting to be published, the most it holds), and
// checks it stays within a budget that lets a small bridge hold a fleet.
func TestLearnedMemoryPerDevice(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a 100k-device registry")
	}
	const n = 100_000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("field-sensor-%06d", i)
	}
	for _, tc := range []struct {
		name     string
		presence bool
		budget   float64
	}{{"registry", false, 400}, {"with_presence", true, 500}} {
		t.Run(tc.name, func(t *testing.T) {
			ep := &coapside.Endpoint{}
			now := time.Now()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var p *presence
			var hook func(LearnEvent)
			if tc.presence {
				p = newPresence(DevicesConfig{PresenceTopic: "devices/{device}/status"}, nil, nil, nil, slog.New(slog.DiscardHandler))
				hook = p.learn
			}
			l := newLearnedDevices(n, nil, hook)
			for i, name := range names {
				addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(i))
				l.learn(name, addr, ep, ViaUDP, false, now)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			per := float64(after.HeapAlloc-before.HeapAlloc) / n
			t.Logf("learned devices: %d, heap %.0f bytes per device (name of %d bytes included, presence %v); %.1f MB in all",
				l.len(), per, len(names[0]), tc.presence, float64(after.HeapAlloc-before.HeapAlloc)/1e6)
			if l.len() != n {
				t.Fatalf("learned %d devices, want %d", l.len(), n)
			}
			if p != nil && (len(p.queue) != n || len(p.due) != n) {
				t.Fatalf("presence: %d queued, %d deadlines, want %d", len(p.queue), len(p.due), n)
			}
			if per > tc.budget {
				t.Errorf("a learned device costs %.0f bytes of heap, budget %.0f", per, tc.budget)
			}
			runtime.KeepAlive(l)
			runtime.KeepAlive(p)
		})
	}
	runtime.KeepAlive(names)
}

// TestLearnedLookupWhileLearning: lookups run while requests move the
// device (the race detector checks that entries are read under the lock).
func TestLearnedLookupWhileLearning(t *testing.T) {
	l := newLearnedDevices(10, nil, nil)
	ep := &coapside.Endpoint{}
	l.learn("d", netip.MustParseAddrPort("10.0.0.1:1"), ep, ViaUDP, false, time.Now())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			l.learn("d", netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(i+1)), ep, ViaUDP, false, time.Now())
		}
	}()
	for range 1000 {
		if d, ok := l.lookup("d"); !ok || d.Addr.Port() == 0 {
			t.Fatalf("lookup %+v %v", d, ok)
		}
	}
	<-done
}

// TestLearnedDeviceAtAddress: the registry finds a device by the address
// it last spoke from (an IPv4-mapped form too), follows a move, and
// forgets the old address; of two names sharing an address (a gateway)
// the one learned there last is found.
func TestLearnedDeviceAtAddress(t *testing.T) {
	l := newLearnedDevices(10, nil, nil)
	now := time.Now()
	a1, a2 := netip.MustParseAddrPort("192.0.2.1:5683"), netip.MustParseAddrPort("192.0.2.2:40000")
	l.learn("a", a1, nil, ViaUDP, false, now)
	l.learn("b", a2, nil, ViaUDP, false, now)
	at := func(ap netip.AddrPort) string {
		name, ok := l.at(ap)
		if !ok {
			return "-"
		}
		return name
	}
	if got := at(netip.MustParseAddrPort("[::ffff:192.0.2.1]:5683")); got != "a" {
		t.Fatalf("a by its mapped address: %s", got)
	}
	moved := netip.MustParseAddrPort("198.51.100.7:1234")
	if k := l.learn("a", moved, nil, ViaUDP, false, now); k != Moved {
		t.Fatalf("learn at a new address: %v", k)
	}
	if got, old := at(moved), at(a1); got != "a" || old != "-" {
		t.Fatalf("after the move: %s at the new address, %s at the old", got, old)
	}
	l.learn("c", a2, nil, ViaUDP, false, now) // c speaks from b's address
	if got := at(a2); got != "c" {
		t.Fatalf("shared address: %s, want c", got)
	}
	if got := at(netip.MustParseAddrPort("192.0.2.9:1")); got != "-" {
		t.Fatalf("unknown address: %s", got)
	}
}

// TestListedDeviceWithURLNotLearned: requests naming a [[device]] with a
// url — a CoAP client reading its resource rule, the device pushing from
// another port — record no address for it: its presence document, the
// status page and commands keep its url, while a device without url is
// learned from the same rules.
func TestListedDeviceWithURLNotLearned(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	addr := dev.addr.String()
	rulesText := fmt.Sprintf(`
[[device]]
name = "listed"
url  = "coap://%s"

[[ingress]]
name    = "up"
path    = "/up/{device}"
methods = ["POST"]
topic   = "up/{device}"

[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"

[[command]]
name           = "cmd"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
`, addr)
	tb := startBridge(t, rulesText, withPresence(time.Minute, 2*time.Minute))
	sub := subscribe(t, tb.MQTTAddr(), "devices/+/status", 1)
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)

	c := newCoAPClient(t) // a port that is not the device's
	for _, rq := range []struct {
		method message.Code
		path   string
	}{{message.GET, "/config/listed"}, {message.POST, "/up/listed"}, {message.POST, "/up/roaming"}} {
		req, err := newReq(rq.method, tb.coapURL(rq.path), []byte("1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Do(t.Context(), req); err != nil {
			t.Fatalf("%v %s: %v", rq.method, rq.path, err)
		}
	}
	if d, ok := tb.learned.lookup("listed"); ok {
		t.Errorf("a listed device with a url was learned at %v", d.Addr)
	}
	if d, ok := tb.learned.lookup("roaming"); !ok || d.Addr.String() != c.Endpoint().LocalAddr().String() {
		t.Errorf("a device without url: learned %v at %v, want at %v", ok, d.Addr, c.Endpoint().LocalAddr())
	}
	if a, via, ok := tb.locateDevice("listed"); !ok || a != addr || via != ViaUDP {
		t.Errorf("listed device located at %q %v %v, want its url's %s", a, via, ok, addr)
	}
	docs := map[string]presenceDoc{}
	for len(docs) < 2 {
		m := sub.next(t, 10*time.Second)
		docs[m.Topic()] = presenceOf(t, m)
	}
	if d := docs["devices/listed/status"]; d.State != "online" || d.Address != addr {
		t.Errorf("listed device's presence %+v, want online at %s", d, addr)
	}
	if d := docs["devices/roaming/status"]; d.State != "online" || d.Address != c.Endpoint().LocalAddr().String() {
		t.Errorf("learned device's presence %+v, want online at %v", d, c.Endpoint().LocalAddr())
	}
	publish(t, tb.MQTTAddr(), "cmd/listed/led", 1, false, "on")
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "ok" || r.URL != "coap://"+addr+"/led" {
		t.Errorf("command result %+v, want ok at its url", r)
	}
	if got := <-dev.got; got.path != "/led" {
		t.Errorf("device got %+v", got)
	}
}

// TestLearnedDeviceGivenAURLByReload: a reload that lists a learned name
// with a url makes the url its address on the status API, as commands
// already reach it there.
func TestLearnedDeviceGivenAURLByReload(t *testing.T) {
	rulesText := `
[[ingress]]
name    = "up"
path    = "/up/{device}"
methods = ["POST"]
topic   = "up/{device}"
`
	tb := startBridge(t, rulesText, func(_ *Config, o *Options) { o.ReloadSettle = 50 * time.Millisecond })
	c := newCoAPClient(t)
	if resp, err := c.Post(t.Context(), tb.coapURL("/up/late"), message.TextPlain, []byte("1")); err != nil || resp.Code != message.Changed {
		t.Fatalf("push: %v %v", resp, err)
	}
	var page ConsoleDevices
	consoleGet(t, tb, "/api/devices?q=late", &page)
	if len(page.Devices) != 1 || !page.Devices[0].Learned {
		t.Fatalf("before: %+v, want late learned", page.Devices)
	}
	tb.writeRules(t, rulesText+"\n[[device]]\nname = \"late\"\nurl  = \"coap://127.0.0.1:5999\"\n")
	testkit.Eventually(t, 5*time.Second, "the url shown", func() bool {
		consoleGet(t, tb, "/api/devices?q=late", &page)
		return len(page.Devices) == 1 && page.Devices[0].Address == "127.0.0.1:5999" && !page.Devices[0].Learned
	})
	if page.Devices[0].LastSeen == nil {
		t.Errorf("the push before the reload is forgotten: %+v", page.Devices[0])
	}
}
