package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/coap-mqtt/bridge/mqttside"
)

const presenceIngressRules = `
[[ingress]]
name    = "telemetry"
path    = "/telemetry/{device}/{metric}"
methods = ["POST"]
topic   = "sensors/{device}/{metric}"
qos     = 1
`

// withPresence turns presence on with thresholds short enough for a test.
func withPresence(awake, offlineAfter time.Duration) func(*Config, *Options) {
	return func(c *Config, _ *Options) {
		c.Devices.PresenceTopic = "devices/{device}/status"
		c.Devices.Awake = awake
		c.Devices.OfflineAfter = offlineAfter
	}
}

// presenceBroker starts a mosquitto for a test whose presence documents
// change while it subscribes: the embedded broker (mochi) reads the
// retained messages for a new subscription without a lock, a race the
// detector reports (mochi-mqtt/server#200). mod points the bridge at it.
func presenceBroker(t *testing.T, awake, offlineAfter time.Duration) (*peer.Mosquitto, func(*Config, *Options)) {
	t.Helper()
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	return broker, func(c *Config, o *Options) {
		useRemoteBroker(c, broker.Addr(), "bridge-presence")
		withPresence(awake, offlineAfter)(c, o)
	}
}

// waitPortFree waits until the UDP address a stopped device used can be
// bound again, for the device to come back there: on a busy machine
// another socket may hold the port for a moment.
func waitPortFree(t *testing.T, addr string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, "port "+addr+" free again", func() bool {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// presenceOf decodes a presence document.
func presenceOf(t *testing.T, m paho.Message) presenceDoc {
	t.Helper()
	var d presenceDoc
	if err := json.Unmarshal(m.Payload(), &d); err != nil {
		t.Fatalf("presence document on %s: %v: %q", m.Topic(), err, m.Payload())
	}
	return d
}

// retainedPresence subscribes anew to a device's presence topic and
// returns the document the broker retained for it.
func retainedPresence(t *testing.T, broker, device string) presenceDoc {
	t.Helper()
	d, m := readPresence(t, broker, device)
	if !m.Retained() {
		t.Errorf("presence document on %s not retained: %q", m.Topic(), m.Payload())
	}
	return d
}

// readPresence subscribes anew to a device's presence topic and returns
// the first document it gets: the retained one, or one published live
// just after the subscription (its message says which).
func readPresence(t *testing.T, broker, device string) (presenceDoc, paho.Message) {
	t.Helper()
	sub := subscribe(t, broker, "devices/"+device+"/status", 1)
	defer sub.c.Disconnect(0)
	m := sub.next(t, 5*time.Second)
	return presenceOf(t, m), m
}

// nextPresence waits for the next document on sub and checks its state.
func nextPresence(t *testing.T, sub *subscriber, state string) (presenceDoc, time.Time) {
	t.Helper()
	m := sub.next(t, 10*time.Second)
	d := presenceOf(t, m)
	if d.State != state {
		t.Fatalf("presence %q, want state %q", m.Payload(), state)
	}
	return d, time.Now()
}

// TestPresenceLearnedOnlineAsleepOfflineAndBack: a device that pushes is
// online (retained, read by a subscriber that comes later), asleep once
// awake passed without a request, offline with a reason once
// offline_after did, and online again with its next push.
func TestPresenceLearnedOnlineAsleepOfflineAndBack(t *testing.T) {
	const awake, offlineAfter = 300 * time.Millisecond, time.Second
	broker, mod := presenceBroker(t, awake, offlineAfter)
	tb := startBridge(t, presenceIngressRules, mod)
	c := newCoAPClient(t)
	push := func() time.Time {
		t.Helper()
		at := time.Now()
		resp, err := c.Post(context.Background(), tb.coapURL("/telemetry/dev1/temp"), message.TextPlain, []byte("21"))
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("push: %v %v", resp, err)
		}
		return at
	}
	pushed := push()
	self := c.Endpoint().LocalAddr().String()

	// Read after the fact: the document is retained. Wait for the broker to
	// have taken it, or a subscription made before that would receive it
	// as a live (not retained) message.
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(tb.presence.publishes.WithLabelValues("published")) < 1; {
		if time.Now().After(deadline) {
			t.Fatal("no presence document published within 5s of the push")
		}
		time.Sleep(10 * time.Millisecond)
	}
	d := retainedPresence(t, broker.Addr(), "dev1")
	if d.State != "online" && d.State != "asleep" { // a slow machine may have passed awake already
		t.Fatalf("retained presence %+v, want online", d)
	}
	if d.Address != self || d.Via != "udp" || d.Reason != "" {
		t.Errorf("presence %+v, want address %s via udp and no reason", d, self)
	}
	seen, err := time.Parse(time.RFC3339, d.LastSeen)
	if err != nil || seen.Before(pushed.Add(-time.Second)) || seen.After(time.Now()) {
		t.Errorf("last_seen %q (%v), want the push's time %v", d.LastSeen, err, pushed)
	}

	// From the retained document on: online → asleep → offline, each
	// only once its threshold passed.
	sub := subscribe(t, broker.Addr(), "devices/+/status", 1)
	state := presenceOf(t, sub.next(t, 5*time.Second)).State
	var off presenceDoc
	var at time.Time
	for state != "offline" {
		want := map[string]string{"online": "asleep", "asleep": "offline"}[state]
		if want == "" {
			t.Fatalf("presence state %q", state)
		}
		off, at = nextPresence(t, sub, want)
		if want == "asleep" && at.Sub(pushed) < awake {
			t.Errorf("asleep %v after the push, before awake (%v)", at.Sub(pushed), awake)
		}
		state = want
	}
	if at.Sub(pushed) < offlineAfter {
		t.Errorf("offline %v after the push, before offline_after (%v)", at.Sub(pushed), offlineAfter)
	}
	if off.Reason != offlineSilent || off.LastSeen != d.LastSeen || off.Address != self {
		t.Errorf("offline document %+v, want reason %q, last_seen %s and address %s", off, offlineSilent, d.LastSeen, self)
	}
	if got := retainedPresence(t, broker.Addr(), "dev1"); got != off {
		t.Errorf("retained %+v, want the offline document %+v", got, off)
	}

	pushed = push()
	back, _ := nextPresence(t, sub, "online")
	if back.Reason != "" || back.LastSeen == off.LastSeen {
		t.Errorf("back online: %+v, want no reason and a new last_seen", back)
	}
	_, at = nextPresence(t, sub, "asleep")
	if at.Sub(pushed) < awake {
		t.Errorf("asleep %v after the push, before awake (%v)", at.Sub(pushed), awake)
	}
	if got := testutil.ToFloat64(tb.presence.devicesGauge.WithLabelValues("asleep")); got != 1 {
		t.Errorf("bridge_presence_devices{state=asleep} = %v, want 1", got)
	}
	for _, s := range []string{"online", "offline"} {
		if got := testutil.ToFloat64(tb.presence.devicesGauge.WithLabelValues(s)); got != 0 {
			t.Errorf("bridge_presence_devices{state=%s} = %v, want 0", s, got)
		}
	}
}

// TestPresenceNotRepublishedOnEveryUplink: pushes while a device stays
// online publish one document, not one each.
func TestPresenceNotRepublishedOnEveryUplink(t *testing.T) {
	tb := startBridge(t, presenceIngressRules, withPresence(time.Minute, 2*time.Minute))
	sub := subscribe(t, tb.MQTTAddr(), "devices/+/status", 1)
	c := newCoAPClient(t)
	for i := range 5 {
		resp, err := c.Post(context.Background(), tb.coapURL("/telemetry/dev2/temp"), message.TextPlain, []byte(fmt.Sprint(i)))
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("push %d: %v %v", i, resp, err)
		}
	}
	nextPresence(t, sub, "online")
	sub.none(t, 500*time.Millisecond)
	// One document handed to MQTT: acknowledged within the handover, or
	// (on a loaded machine) still in flight then and counted buffered.
	pub, buf := testutil.ToFloat64(tb.presence.publishes.WithLabelValues("published")), testutil.ToFloat64(tb.presence.publishes.WithLabelValues("buffered"))
	if pub+buf != 1 {
		t.Errorf("bridge_presence_publishes_total published %v + buffered %v after 5 pushes, want 1", pub, buf)
	}
}

// TestPresenceObservedDevice: a listed device is online while the bridge
// observes it, offline with a reason once it stops answering, and online
// again when it is back.
func TestPresenceObservedDevice(t *testing.T) {
	dev := startObservableDevice(t, "", 1) // Max-Age 1 s: silence is noticed fast
	addr := dev.addr.String()
	broker, mod := presenceBroker(t, 300*time.Millisecond, time.Second)
	startBridge(t, observeRules(dev.addr), func(c *Config, o *Options) {
		mod(c, o)
		o.ReobserveMin, o.ReobserveMax = 50*time.Millisecond, 200*time.Millisecond
	})
	sub := subscribe(t, broker.Addr(), "devices/+/status", 1)
	d, _ := nextPresence(t, sub, "online")
	if d.Address != addr || d.Via != "udp" || d.LastSeen == "" {
		t.Errorf("presence %+v, want address %s via udp with last_seen", d, addr)
	}
	// Listed devices the bridge reaches itself do not fall asleep: nothing
	// changes while the observation holds, well past awake.
	sub.none(t, time.Second)

	dev.srv.Close()
	dev.stop()
	// Its port is closed: the bridge hears ICMP port unreachable.
	off, _ := nextPresence(t, sub, "offline")
	if off.Reason != closedPortReason || off.Address != addr {
		t.Errorf("offline document %+v, want reason %q at %s", off, closedPortReason, addr)
	}
	if got := retainedPresence(t, broker.Addr(), "d1"); got != off {
		t.Errorf("retained %+v, want %+v", got, off)
	}

	waitPortFree(t, addr)
	startObservableDevice(t, addr, 1)
	back, _ := nextPresence(t, sub, "online")
	if back.Reason != "" || back.Address != addr {
		t.Errorf("back online: %+v", back)
	}
}

// TestPresenceConfigRefused: bad presence keys are refused, by key, by
// Validate (so by bridge check and bridge run).
func TestPresenceConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*DevicesConfig)
		key  string
		msg  string
	}{
		{"no capture", func(d *DevicesConfig) { d.PresenceTopic = "devices/status" }, "devices.presence_topic", "needs {device}"},
		{"other capture", func(d *DevicesConfig) { d.PresenceTopic = "devices/{device}/{kind}" }, "devices.presence_topic", "{kind}"},
		{"rest capture", func(d *DevicesConfig) { d.PresenceTopic = "devices/{device...}" }, "devices.presence_topic", "{device...}"},
		{"wildcard", func(d *DevicesConfig) { d.PresenceTopic = "devices/+/{device}" }, "devices.presence_topic", "'+'"},
		{"negative awake", func(d *DevicesConfig) { d.Awake = -time.Second }, "devices.awake", "negative"},
		{"negative offline_after", func(d *DevicesConfig) { d.OfflineAfter = -time.Second }, "devices.offline_after", "negative"},
		{"offline before asleep", func(d *DevicesConfig) { d.Awake, d.OfflineAfter = time.Minute, 30*time.Second }, "devices.offline_after", "longer than devices.awake"},
		{"awake past the default offline_after", func(d *DevicesConfig) { d.Awake = time.Hour }, "devices.offline_after", "longer than devices.awake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := ruleFileConfig(t, presenceIngressRules)
			tc.mod(&cfg.Devices)
			_, err := Check(cfg)
			var ce ConfigErrors
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Check: %v, want ConfigErrors", err)
			}
			if len(ce) != 1 || ce[0].Key != tc.key || !strings.Contains(ce[0].Msg, tc.msg) {
				t.Errorf("Check: %v, want one error on %s saying %q", err, tc.key, tc.msg)
			}
		})
	}
	cfg, _ := ruleFileConfig(t, presenceIngressRules)
	cfg.Devices.PresenceTopic = "site-1/{device}/presence"
	if _, err := Check(cfg); err != nil {
		t.Errorf("Check of a good presence topic: %v", err)
	}
}

// countingPublisher records the presence documents published, by topic.
type countingPublisher struct {
	mu    sync.Mutex
	n     int
	last  map[string]presenceDoc
	fails int // refuse this many publishes first (a full offline buffer)
}

func (c *countingPublisher) Publish(_ context.Context, m mqttside.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fails > 0 {
		c.fails--
		return mqttside.ErrBufferFull
	}
	var d presenceDoc
	if err := json.Unmarshal(m.Payload, &d); err != nil || !m.Retain || m.QoS != 1 {
		return fmt.Errorf("bad presence message %+v: %v", m, err)
	}
	c.n++
	c.last[m.Topic] = d
	return nil
}

func (c *countingPublisher) PublishOrWithdraw(ctx context.Context, m mqttside.Message) error {
	return c.Publish(ctx, m)
}

func (c *countingPublisher) count() (int, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	states := map[string]int{}
	for _, d := range c.last {
		states[d.State]++
	}
	return c.n, states
}

// runPresence runs a tracker with pub until the test ends.
func runPresence(t *testing.T, cfg DevicesConfig, pub publisher, reg prometheus.Registerer) *presence {
	t.Helper()
	cfg.PresenceTopic = "devices/{device}/status"
	locate := func(name string) (string, Via, bool) { return "10.0.0.1:5683", ViaUDP, true }
	p := newPresence(cfg, pub, locate, reg, slog.New(slog.NewTextHandler(testkit.LogWriter{TB: t}, nil)))
	done := make(chan struct{})
	go func() { p.Run(context.Background()); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.Shutdown(ctx)
		<-done
	})
	return p
}

// TestPresenceRetriesRefusedDocuments: a document the MQTT client refuses
// for now (its offline buffer full) is published later, never lost.
func TestPresenceRetriesRefusedDocuments(t *testing.T) {
	pub := &countingPublisher{last: map[string]presenceDoc{}, fails: 2}
	p := runPresence(t, DevicesConfig{Awake: time.Minute, OfflineAfter: 2 * time.Minute}, pub, nil)
	p.learn(LearnEvent{Kind: Learned, Device: LearnedDevice{Name: "dev-r", LastSeen: time.Now()}})
	testkit.Eventually(t, 10*time.Second, "document published after the refusals", func() bool {
		n, states := pub.count()
		return n == 1 && states["online"] == 1
	})
	if got := testutil.ToFloat64(p.publishes.WithLabelValues("retried")); got != 2 {
		t.Errorf("retried %v, want 2", got)
	}
}

// TestPresenceAtScale drives 10k learned devices through online, a burst
// of uplinks, asleep and offline, and measures the documents published
// and the heap a tracked device costs.
func TestPresenceAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("tracks 10k devices")
	}
	const n = 10_000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("field-sensor-%06d", i)
	}
	learn := func(p *presence, kind LearnKind, name string) {
		p.learn(LearnEvent{Kind: kind, Device: LearnedDevice{Name: name, Addr: netip.MustParseAddrPort("10.0.0.1:5683"), Via: ViaUDP, LastSeen: time.Now()}})
	}

	// The heap of a tracker whose documents all wait to be published.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	idle := newPresence(DevicesConfig{PresenceTopic: "devices/{device}/status"}, nil, nil, nil, slog.New(slog.DiscardHandler))
	for _, name := range names {
		learn(idle, Learned, name)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	if len(idle.queue) != n || len(idle.due) != n {
		t.Fatalf("idle tracker: %d queued, %d deadlines, want %d", len(idle.queue), len(idle.due), n)
	}
	runtime.KeepAlive(idle)

	pub := &countingPublisher{last: map[string]presenceDoc{}}
	const awake, offlineAfter = 500 * time.Millisecond, 1500 * time.Millisecond
	p := runPresence(t, DevicesConfig{Awake: awake, OfflineAfter: offlineAfter}, pub, nil)
	start := time.Now()
	for _, name := range names {
		learn(p, Learned, name)
	}
	for range 5 { // uplinks while online: no documents
		for _, name := range names {
			learn(p, Seen, name)
		}
	}
	learned := time.Since(start)
	testkit.Eventually(t, 30*time.Second, "every device offline", func() bool {
		_, states := pub.count()
		return states["offline"] == n
	})
	took := time.Since(start)
	published, _ := pub.count()
	t.Logf("%d devices: 6 uplinks each in %v; all offline after %v; %d documents published; heap %.0f bytes per tracked device (name of %d bytes shared with the registry, queued and scheduled)",
		n, learned, took, published, per, len(names[0]))
	// online, asleep, offline: at most three each (fewer when a state was
	// overtaken before its document went out); never one per uplink.
	if published > 3*n || published < n {
		t.Errorf("%d documents for %d devices, want between %d and %d", published, n, n, 3*n)
	}
	if per > 250 {
		t.Errorf("a tracked device costs %.0f bytes of heap, budget 250", per)
	}
	for _, s := range []string{"online", "asleep"} {
		if got := testutil.ToFloat64(p.devicesGauge.WithLabelValues(s)); got != 0 {
			t.Errorf("bridge_presence_devices{state=%s} = %v, want 0", s, got)
		}
	}
	if got := testutil.ToFloat64(p.devicesGauge.WithLabelValues("offline")); got != n {
		t.Errorf("bridge_presence_devices{state=offline} = %v, want %d", got, n)
	}
	runtime.KeepAlive(names)
}

// closedPortReason is the offline reason of a device whose port was
// closed: Linux reports the ICMP port unreachable to the bridge's socket;
// elsewhere the request times out.
var closedPortReason = map[bool]string{true: offlineUnreachable, false: offlineTimeout}[runtime.GOOS == "linux"]

// TestOfflineReason: only failures that say something of the device mark
// it offline.
func TestOfflineReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{coapside.ErrTimeout, offlineTimeout},
		{fmt.Errorf("observe: %w", coapside.ErrUnreachable), offlineUnreachable},
		{fmt.Errorf("poll: %w", context.DeadlineExceeded), offlineTimeout},
		{context.Canceled, ""},
		{coapside.ErrCanceled, ""},
		{errors.New("coap: bad option"), ""},
	} {
		if got := offlineReason(tc.err); got != tc.want {
			t.Errorf("offlineReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestPresenceThroughBrokerOutage runs the bridge against mosquitto:
// documents that change while the broker is down wait in the offline
// buffer and are retained once it is back; when the bridge stops, the
// device's document stays as it was and the bridge's status topic says
// offline.
func TestPresenceThroughBrokerOutage(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	var clientID string
	tb := startBridge(t, presenceIngressRules, func(c *Config, o *Options) {
		useRemoteBroker(c, broker.Addr(), "bridge-presence")
		clientID = c.MQTT.ClientID
		withPresence(300*time.Millisecond, time.Second)(c, o)
	})
	c := newCoAPClient(t)
	push := func() {
		t.Helper()
		resp, err := c.Post(t.Context(), tb.coapURL("/telemetry/dev3/temp"), message.TextPlain, []byte("1"))
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("push: %v %v", resp, err)
		}
	}
	push()
	testkit.Eventually(t, 10*time.Second, "online document published", func() bool {
		return testutil.ToFloat64(tb.presence.publishes.WithLabelValues("published")) >= 1
	})

	// Asleep, then offline, while the broker is down.
	broker.Kill()
	testkit.Eventually(t, 10*time.Second, "not ready while the broker is down", func() bool { return !tb.Ready() })
	testkit.Eventually(t, 10*time.Second, "offline document buffered", func() bool {
		return testutil.ToFloat64(tb.presence.devicesGauge.WithLabelValues("offline")) == 1 &&
			testutil.ToFloat64(tb.presence.publishes.WithLabelValues("buffered")) >= 1
	})
	broker.Restart()
	testkit.Eventually(t, 30*time.Second, "ready after the broker is back", tb.Ready)
	var d presenceDoc
	testkit.Eventually(t, 10*time.Second, "the offline document retained", func() bool {
		// the buffered documents are resent after the reconnection: one
		// may reach this subscriber live (not retained) on its way
		var m paho.Message
		d, m = readPresence(t, broker.Addr(), "dev3")
		return m.Retained() && d.State == "offline"
	})
	if d.Reason != offlineSilent {
		t.Errorf("retained %+v, want reason %q", d, offlineSilent)
	}

	// Online again, then the bridge stops: the document is not rewritten.
	sub := subscribe(t, broker.Addr(), "devices/dev3/status", 1)
	presenceOf(t, sub.next(t, 5*time.Second)) // the retained offline one
	push()
	online, _ := nextPresence(t, sub, "online")
	tb.stop(t)
	status := subscribe(t, broker.Addr(), clientID+"/status", 1)
	if m := status.next(t, 5*time.Second); string(m.Payload()) != "offline" || !m.Retained() {
		t.Errorf("bridge status %q (retained %v), want a retained offline", m.Payload(), m.Retained())
	}
	if got := retainedPresence(t, broker.Addr(), "dev3"); got.State == "offline" {
		// asleep may have been published before the stop; offline cannot
		t.Errorf("retained after the stop: %+v, want the document of before (%+v or asleep)", got, online)
	}
}

// TestPresenceCommandedDevice: a listed device that does not answer a
// command is offline (timeout); once it answers again (the bridge's
// probe of offline devices) it is online.
func TestPresenceCommandedDevice(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // swallows everything: the device is down
	if err != nil {
		t.Fatal(err)
	}
	addr := silent.LocalAddr().String()
	tb := startBridge(t, commandRules(addr), func(c *Config, o *Options) {
		withPresence(300*time.Millisecond, time.Second)(c, o)
		o.ProbeMin, o.ProbeMax = 100*time.Millisecond, 200*time.Millisecond
	})
	sub := subscribe(t, tb.MQTTAddr(), "devices/+/status", 1)
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)

	publish(t, tb.MQTTAddr(), "cmd/dev1/led", 1, false, "on")
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "timeout" {
		t.Fatalf("result %+v, want timeout", r)
	}
	off, _ := nextPresence(t, sub, "offline")
	if off.Reason != offlineTimeout || off.Address != addr || off.Via != "udp" || off.LastSeen != "" {
		t.Errorf("offline document %+v, want reason %q at %s via udp, never seen", off, offlineTimeout, addr)
	}

	silent.Close()
	waitPortFree(t, addr)
	dev := startDevice(t, addr)
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	back, _ := nextPresence(t, sub, "online")
	if back.Reason != "" || back.LastSeen == "" {
		t.Errorf("back online: %+v", back)
	}
	publish(t, tb.MQTTAddr(), "cmd/dev1/led", 1, false, "off")
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "ok" {
		t.Fatalf("result %+v, want ok", r)
	}
	// Listed devices do not fall asleep; an answer while online publishes
	// nothing.
	sub.none(t, time.Second)
}

// TestPresenceDTLSDeviceNotRevivedByClaim: a device learned over DTLS
// with its identity is online via dtls; a plain UDP request that claims
// its name (served on a rule without identity, not learned) does not make
// it online again once it is asleep.
func TestPresenceDTLSDeviceNotRevivedByClaim(t *testing.T) {
	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk.toml")
	if err := os.WriteFile(pskFile, []byte("[[psk]]\nidentity = \"dev1\"\nkey = \"secret-1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, secureRules+`
[[ingress]]
name    = "open"
path    = "/open/{device}"
methods = ["POST"]
topic   = "open/{device}"
`, func(c *Config, o *Options) {
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
		withPresence(300*time.Millisecond, time.Minute)(c, o)
	})
	sub := subscribe(t, tb.MQTTAddr(), "devices/+/status", 1)
	dev1 := pskClient(t, "dev1", "secret-1")
	resp, err := dev1.Post(t.Context(), "coaps://"+tb.DTLSAddr().String()+"/secure/dev1", message.TextPlain, []byte("ok"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("dev1 over DTLS: %v %v", resp, err)
	}
	d, _ := nextPresence(t, sub, "online")
	if d.Via != "dtls" || d.Address != dev1.Endpoint().LocalAddr().String() {
		t.Errorf("presence %+v, want via dtls from %s", d, dev1.Endpoint().LocalAddr())
	}
	nextPresence(t, sub, "asleep")

	thief := newCoAPClient(t)
	resp, err = thief.Post(t.Context(), tb.coapURL("/open/dev1"), message.TextPlain, []byte("mine"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("plain UDP claim on a rule without identity: %v %v, want 2.04", resp, err)
	}
	sub.none(t, time.Second)
	if got := retainedPresence(t, tb.MQTTAddr(), "dev1"); got.State != "asleep" {
		t.Errorf("after a plain UDP claim: %+v, want asleep", got)
	}
}

// TestPresencePolledDevice: a polled device is online while it answers,
// offline (timeout) when it stops, and online again when it is back;
// polls in between publish nothing.
func TestPresencePolledDevice(t *testing.T) {
	battery := func(w coapside.ResponseWriter, r *coapside.Request) { w.Write([]byte("90")) }
	dev := startDevice(t, "")
	dev.mux.HandleFunc("GET /battery", battery)
	addr := dev.addr.String()
	broker, mod := presenceBroker(t, 50*time.Millisecond, 200*time.Millisecond)
	startBridge(t, fmt.Sprintf(`
[[device]]
name = "p1"
url  = "coap://%s"

[[poll]]
name     = "battery"
devices  = ["p1"]
paths    = ["/battery"]
interval = "100ms"
topic    = "battery/{device}"
`, addr), mod)
	sub := subscribe(t, broker.Addr(), "devices/+/status", 1)
	nextPresence(t, sub, "online")
	sub.none(t, 500*time.Millisecond) // five polls, past offline_after: no change

	dev.srv.Close()
	off, _ := nextPresence(t, sub, "offline")
	if off.Reason != closedPortReason || off.Address != addr {
		t.Errorf("offline document %+v, want reason %q at %s", off, closedPortReason, addr)
	}
	waitPortFree(t, addr)
	dev = startDevice(t, addr)
	dev.mux.HandleFunc("GET /battery", battery)
	nextPresence(t, sub, "online")
}

// TestPresenceClearedWhenDeviceRemoved: a reload that removes a listed
// device clears its retained presence document (an empty retained
// message) and drops it from the counts; the device that stays keeps its
// document, and a device added back is published again.
func TestPresenceClearedWhenDeviceRemoved(t *testing.T) {
	battery := func(w coapside.ResponseWriter, r *coapside.Request) { w.Write([]byte("90")) }
	devs := map[string]*fakeDevice{}
	for _, n := range []string{"keep", "gone"} {
		devs[n] = startDevice(t, "")
		devs[n].mux.HandleFunc("GET /battery", battery)
	}
	rulesFor := func(names ...string) string {
		var b strings.Builder
		for _, n := range names {
			fmt.Fprintf(&b, "[[device]]\nname = %q\nurl  = \"coap://%s\"\n\n", n, devs[n].addr)
		}
		fmt.Fprintf(&b, "[[poll]]\nname     = \"battery\"\ndevices  = [\"%s\"]\npaths    = [\"/battery\"]\ninterval = \"100ms\"\ntopic    = \"battery/{device}\"\n", strings.Join(names, `", "`))
		return b.String()
	}
	broker, mod := presenceBroker(t, time.Minute, time.Hour)
	sub := subscribe(t, broker.Addr(), "devices/+/status", 1)
	tb := startBridge(t, rulesFor("keep", "gone"), mod)
	online := map[string]bool{}
	for len(online) < 2 {
		m := sub.next(t, 10*time.Second)
		if presenceOf(t, m).State == "online" {
			online[m.Topic()] = true
		}
	}

	tb.writeRules(t, rulesFor("keep"))
	m := sub.next(t, 10*time.Second)
	if m.Topic() != "devices/gone/status" || len(m.Payload()) != 0 {
		t.Fatalf("after the reload: %q on %s, want an empty message on devices/gone/status", m.Payload(), m.Topic())
	}
	late := subscribe(t, broker.Addr(), "devices/gone/status", 1)
	late.none(t, time.Second) // nothing retained any more
	if d := retainedPresence(t, broker.Addr(), "keep"); d.State != "online" {
		t.Fatalf("the device kept: %+v", d)
	}
	testkit.Eventually(t, 5*time.Second, "counts without the removed device", func() bool {
		on, asleep, off := tb.presence.counts()
		return on == 1 && asleep == 0 && off == 0
	})

	tb.writeRules(t, rulesFor("keep", "gone"))
	if d, _ := nextPresence(t, late, "online"); d.Address != devs["gone"].addr.String() {
		t.Fatalf("the device added back: %+v", d)
	}
}

// TestPresenceProxiedDevice: a [[device]] the bridge reaches only through a
// proxy rule is online once it answered a proxied request, offline
// (unreachable) once a request finds its port closed, and online again
// when it answers; the status API shows the same.
func TestPresenceProxiedDevice(t *testing.T) {
	dev := startDevice(t, "")
	content := func(w coapside.ResponseWriter, r *coapside.Request) {
		w.SetCode(message.Content)
		_, _ = w.Write([]byte("1"))
	}
	dev.mux.HandleFunc("GET /x", content)
	addr := dev.addr.String()
	tb := startBridge(t, proxyRules(dev.addr, "cache = false"), withPresence(300*time.Millisecond, time.Second))
	sub := subscribe(t, tb.MQTTAddr(), "devices/+/status", 1)
	c := newCoAPClient(t)
	get := func(want message.Code) {
		t.Helper()
		if resp := proxyGet(t, c, tb, "/devices/d1/x"); resp.Code != want {
			t.Fatalf("GET through the proxy: %v %q, want %v", resp.Code, resp.Payload, want)
		}
	}

	get(message.Content)
	if on, _ := nextPresence(t, sub, "online"); on.Address != addr || on.LastSeen == "" {
		t.Errorf("online document %+v, want %s and a last_seen", on, addr)
	}
	dev.srv.Close()
	get(message.BadGateway)
	if off, _ := nextPresence(t, sub, "offline"); off.Reason != offlineUnreachable {
		t.Errorf("offline document %+v, want reason %q", off, offlineUnreachable)
	}
	if got := deviceState(t, tb, "d1"); got != "offline" {
		t.Errorf("status API says d1 is %q, want offline", got)
	}

	waitPortFree(t, addr)
	dev = startDevice(t, addr)
	dev.mux.HandleFunc("GET /x", content)
	get(message.Content)
	nextPresence(t, sub, "online")
	if got := deviceState(t, tb, "d1"); got != "online" {
		t.Errorf("status API says d1 is %q, want online", got)
	}
}

// deviceState reads a device's state from the status API.
func deviceState(t *testing.T, tb *testBridge, name string) string {
	t.Helper()
	var page ConsoleDevices
	consoleGet(t, tb, "/api/devices?q="+name, &page)
	for _, d := range page.Devices {
		if d.Name == name {
			return d.State
		}
	}
	t.Fatalf("%s is not on /api/devices: %+v", name, page)
	return ""
}
