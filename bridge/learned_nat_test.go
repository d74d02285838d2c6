package bridge

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// learnedRules name no device: devices are learned from their pushes and
// commanded where they last pushed from.
const learnedRules = `
[[device]]
name = "quiet"                     # no url, never heard from

[[ingress]]
name    = "up"
path    = "/up/{device}"
methods = ["POST"]
topic   = "up/{device}"

[[command]]
name           = "down"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
timeout        = "2s"
`

// learnedObserveRules adds to learnedRules an observation of /temp on
// every learned device.
const learnedObserveRules = learnedRules + `
[[observe]]
name    = "every"
devices = ["*"]
paths   = ["/temp"]
topic   = "temp/{device}"
`

// natDevice is a device behind the test NAT: it pushes and serves from
// one socket, so a request reaches it only through the binding its
// pushes opened.
type natDevice struct {
	*fakeDevice
	push *coapside.Client
	nat  *peer.LossyProxy
}

func startNATDevice(t *testing.T, nat *peer.LossyProxy) *natDevice {
	t.Helper()
	d := startDevice(t, "")
	d.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	return &natDevice{fakeDevice: d, push: d.pusher(t), nat: nat}
}

// pushUp posts a reading to the bridge through the NAT.
func (d *natDevice) pushUp(t *testing.T, name, value string) {
	t.Helper()
	resp, err := d.push.Post(t.Context(), "coap://"+d.nat.Addr().String()+"/up/"+name, message.TextPlain, []byte(value))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("push through the NAT: %v %v", resp, err)
	}
}

// self is the device's own address, behind the NAT.
func (d *natDevice) self() *net.UDPAddr { return d.addr.(*net.UDPAddr) }

// nextRequest waits for the device's next request.
func (d *natDevice) nextRequest(t *testing.T) recorded {
	t.Helper()
	select {
	case r := <-d.got:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the device got no request")
		return recorded{}
	}
}

// TestLearnedDeviceCommandedThroughNAT: a device with no url pushes
// through a NAT; a command reaches it through the NAT's binding, from the
// bridge's own CoAP port; after the NAT rebinds it and it pushes again,
// commands follow it to the new binding.
func TestLearnedDeviceCommandedThroughNAT(t *testing.T) {
	tb := startBridge(t, learnedRules, nil)
	nat := peer.StartNAT(t, tb.CoAPAddr().(*net.UDPAddr), 0)
	dev := startNATDevice(t, nat)
	ups := subscribe(t, tb.MQTTAddr(), "up/#", 1)
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)

	dev.pushUp(t, "dev-a", "21.5")
	ups.waitFor(t, 5*time.Second, "up/dev-a", "21.5")
	binding := nat.External(dev.self())
	if ld, ok := tb.learned.lookup("dev-a"); !ok || ld.Addr.String() != binding.String() || ld.Via != ViaUDP {
		t.Fatalf("learned %+v %v, want the NAT binding %v over udp", ld, ok, binding)
	}

	sent := time.Now()
	publish(t, tb.MQTTAddr(), "cmd/dev-a/led", 1, false, "on")
	got := dev.nextRequest(t)
	t.Logf("command delivered %v after its MQTT publish", time.Since(sent))
	if got.method != message.PUT || got.path != "/led" || got.payload != "on" {
		t.Fatalf("device got %+v", got)
	}
	// Through the NAT: the request came to the device from the NAT, so it
	// left the bridge towards the binding the push opened.
	if got.from.String() != nat.Addr().String() {
		t.Fatalf("command came from %v, want the NAT %v", got.from, nat.Addr())
	}
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" || r.Code != "2.04" || r.Device != "dev-a" {
		t.Fatalf("result %+v", r)
	}

	// The NAT gives the device a new port; its next push moves it.
	moved, err := nat.Rebind(dev.self())
	if err != nil {
		t.Fatal(err)
	}
	dev.pushUp(t, "dev-a", "21.7")
	ups.waitFor(t, 5*time.Second, "up/dev-a", "21.7")
	if ld, _ := tb.learned.lookup("dev-a"); ld.Addr.String() != moved.String() {
		t.Fatalf("after the rebinding the device is at %v, want %v", ld.Addr, moved)
	}
	publish(t, tb.MQTTAddr(), "cmd/dev-a/led", 1, false, "off")
	if got := dev.nextRequest(t); got.payload != "off" || got.from.String() != nat.Addr().String() {
		t.Fatalf("after the rebinding the device got %+v", got)
	}
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" {
		t.Fatalf("result after the rebinding %+v", r)
	}
}

// TestLearnedDeviceUnreachableAfterNATExpiry: once the NAT has dropped a
// silent device's binding (and closed its outside port), a command cannot
// reach the device: it is announced queued, not lost as a timeout, and it
// and a later command go out in order right after the device's next push.
func TestLearnedDeviceUnreachableAfterNATExpiry(t *testing.T) {
	tb := startBridge(t, learnedRules, func(_ *Config, o *Options) { o.CommandQueueTTL = time.Minute })
	nat := peer.StartNAT(t, tb.CoAPAddr().(*net.UDPAddr), 500*time.Millisecond)
	dev := startNATDevice(t, nat)
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)

	dev.pushUp(t, "dev-b", "1")
	testkit.Eventually(t, 10*time.Second, "NAT binding expired", func() bool { return nat.External(dev.self()) == nil })
	publish(t, tb.MQTTAddr(), "cmd/dev-b/led", 1, false, "first")
	r := decodeResult(t, replies.next(t, 10*time.Second).Payload())
	if r.Status != "queued" || r.Device != "dev-b" || r.Position != 1 {
		t.Fatalf("command behind an expired binding: %+v, want queued at 1", r)
	}
	if n := dev.count(); n != 0 {
		t.Fatalf("the device got %d requests through an expired binding", n)
	}

	publish(t, tb.MQTTAddr(), "cmd/dev-b/led", 1, false, "later")
	testkit.Eventually(t, 5*time.Second, "commands queued", func() bool {
		return testutil.ToFloat64(tb.metrics.queueDepth) == 2
	})
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "queued" || r.Position != 2 {
		t.Fatalf("command for the device that stopped answering: %+v, want queued at 2", r)
	}
	pushed := time.Now()
	dev.pushUp(t, "dev-b", "2")
	for _, want := range []string{"first", "later"} {
		if got := dev.nextRequest(t); got.payload != want || got.from.String() != nat.Addr().String() {
			t.Fatalf("after the push the device got %+v, want %q", got, want)
		}
		if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" {
			t.Fatalf("queued command result %+v", r)
		}
	}
	t.Logf("queued commands delivered %v after the push", time.Since(pushed))
}

// TestLearnedCommandRequeuedWhenPortUnreachable: a learned device the
// bridge believes awake has closed its port (it rebooted, or its radio
// stack dropped the socket). The command meets ICMP port unreachable, so
// it certainly was not delivered: it is announced queued, not ended as a
// timeout, and goes out right after the device's next push, from its new
// port.
func TestLearnedCommandRequeuedWhenPortUnreachable(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ICMP port unreachable reaches the socket on Linux")
	}
	tb := startBridge(t, learnedRules, func(_ *Config, o *Options) { o.CommandQueueTTL = time.Minute })
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	bridgeURL := "coap://" + tb.CoAPAddr().String() + "/up/dev-u"
	push := func(d *fakeDevice, value string) {
		t.Helper()
		resp, err := d.pusher(t).Post(t.Context(), bridgeURL, message.TextPlain, []byte(value))
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("push: %v %v", resp, err)
		}
	}
	gone := startDevice(t, "")
	push(gone, "1")
	gone.srv.Close() // its port is closed; the bridge thinks it awake

	publish(t, tb.MQTTAddr(), "cmd/dev-u/led", 1, false, "on")
	r := decodeResult(t, replies.next(t, 10*time.Second).Payload())
	if r.Status != "queued" || r.Position != 1 || r.Device != "dev-u" {
		t.Fatalf("command to a closed port: %+v, want queued at 1", r)
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("down", reasonUnreachable)); got != 0 {
		t.Fatalf("%v unreachable errors counted for a command still queued", got)
	}

	back := startDevice(t, "")
	back.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	push(back, "2")
	select {
	case got := <-back.got:
		if got.payload != "on" || got.path != "/led" {
			t.Fatalf("after the push the device got %+v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the queued command never reached the device's new port")
	}
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" {
		t.Fatalf("result after the device came back: %+v", r)
	}
}

// TestLearnedCommandForDeviceNeverSeen: a command for a device with no url
// that never spoke gets an error result naming it, counted, at once.
func TestLearnedCommandForDeviceNeverSeen(t *testing.T) {
	tb := startBridge(t, learnedRules, nil)
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	for i, name := range []string{"ghost", "quiet"} { // no [[device]]; a [[device]] without url
		publish(t, tb.MQTTAddr(), "cmd/"+name+"/led", 1, false, "on")
		r := decodeResult(t, replies.next(t, 5*time.Second).Payload())
		if r.Status != "error" || r.Device != name || !strings.Contains(r.Error, `"`+name+`"`) || !strings.Contains(r.Error, "has not spoken") {
			t.Fatalf("command for %s: %+v", name, r)
		}
		if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("down", reasonUnknownDevice)); got != float64(i+1) {
			t.Errorf("unknown device errors %v, want %d", got, i+1)
		}
	}
}

// TestLearnedClaimOverPlainUDPDoesNotMoveDevice: a device learned over
// DTLS with its identity keeps its endpoint when a plain UDP request
// claims its name: refused 4.01 on a rule that requires identity (as
// before learning existed), and published but not learned on a rule that
// does not. A coaps command then still reaches it on its DTLS session.
func TestLearnedClaimOverPlainUDPDoesNotMoveDevice(t *testing.T) {
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

[[command]]
name           = "secure-down"
filter         = "scmd/{device}/{resource...}"
method         = "PUT"
url            = "coaps://{device}/{resource...}"
response_topic = "sreplies/{device}/{resource...}"
timeout        = "2s"
`, func(c *Config, _ *Options) {
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
	})
	ctx := t.Context()
	dev1 := pskClient(t, "dev1", "secret-1")
	resp, err := dev1.Post(ctx, "coaps://"+tb.DTLSAddr().String()+"/secure/dev1", message.TextPlain, []byte("ok"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("dev1 over DTLS: %v %v", resp, err)
	}
	real, ok := tb.learned.lookup("dev1")
	if !ok || real.Via != ViaDTLS || !real.Authenticated {
		t.Fatalf("learned %+v %v, want dev1 over dtls, authenticated", real, ok)
	}

	thief := newCoAPClient(t)
	resp, err = thief.Post(ctx, tb.coapURL("/secure/dev1"), message.TextPlain, []byte("mine"))
	if err != nil || resp.Code != message.Unauthorized {
		t.Fatalf("plain UDP claim on an identity rule: %v %v, want 4.01", resp, err)
	}
	// Refused on identity: not learned either, for a name not yet known.
	resp, err = thief.Post(ctx, tb.coapURL("/secure/dev9"), message.TextPlain, []byte("mine"))
	if err != nil || resp.Code != message.Unauthorized {
		t.Fatalf("plain UDP request on an identity rule: %v %v, want 4.01", resp, err)
	}
	if ld, ok := tb.learned.lookup("dev9"); ok {
		t.Fatalf("a request refused on identity was learned: %+v", ld)
	}
	resp, err = thief.Post(ctx, tb.coapURL("/open/dev1"), message.TextPlain, []byte("mine"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("plain UDP on a rule without identity: %v %v, want 2.04", resp, err)
	}
	if got, _ := tb.learned.lookup("dev1"); got.Addr != real.Addr || got.Via != ViaDTLS || got.Endpoint != real.Endpoint {
		t.Fatalf("after plain UDP claims dev1 is at %v over %v, want %v over dtls", got.Addr, got.Via, real.Addr)
	}
	if n := testutil.ToFloat64(tb.learned.refused.WithLabelValues("claim")); n != 1 {
		t.Errorf("refused claims %v, want 1", n)
	}

	// The command goes over dev1's own session; a client endpoint answers
	// a request 4.04, which is proof enough that it got there.
	replies := subscribe(t, tb.MQTTAddr(), "sreplies/#", 1)
	publish(t, tb.MQTTAddr(), "scmd/dev1/led", 1, false, "on")
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "ok" || r.Code != "4.04" {
		t.Fatalf("coaps command to the learned device: %+v", r)
	}
}

// TestLearnedLibcoapClientThroughNAT: libcoap's coap-client pushes
// through the NAT; the bridge learns the NAT's binding, not the client's
// own port, and a command while the client still runs reaches libcoap
// through that binding and comes back with its answer.
func TestLearnedLibcoapClientThroughNAT(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	tb := startBridge(t, learnedRules, nil)
	nat := peer.StartNAT(t, tb.CoAPAddr().(*net.UDPAddr), 0)
	ups := subscribe(t, tb.MQTTAddr(), "up/#", 1)
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	port := peer.FreeUDPPort(t)
	self := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}

	// -G 8: the push is repeated every second from the same socket, so
	// the client is there to be reached for a while.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, client, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-G", "8", "-B", "10",
		"-m", "post", "-e", "7", "coap://"+nat.Addr().String()+"/up/lib-1")
	var out testkit.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })

	ups.waitFor(t, 10*time.Second, "up/lib-1", "7")
	binding := nat.External(self)
	if binding == nil || binding.Port == port {
		t.Fatalf("NAT binding of the client: %v (client port %d)", binding, port)
	}
	if ld, ok := tb.learned.lookup("lib-1"); !ok || ld.Addr.String() != binding.String() {
		t.Fatalf("learned %+v %v, want the NAT binding %v", ld, ok, binding)
	}
	publish(t, tb.MQTTAddr(), "cmd/lib-1/led", 1, false, "on")
	// libcoap's client serves no resources: its 4.04 is the proof that
	// the request got through the binding to it and back.
	r := decodeResult(t, replies.next(t, 10*time.Second).Payload())
	if r.Status != "ok" || r.Code != "4.04" || r.Device != "lib-1" {
		t.Fatalf("command to the libcoap client behind the NAT: %+v (client output: %s)", r, out.String())
	}
}

// TestLearnedDevicesObservedAsLearned: with devices = ["*"] the bridge
// observes every device as it learns it, through the NAT binding its push
// opened; after the NAT rebinds it and it pushes again, the observation is
// made again at the new binding and notifications keep coming.
func TestLearnedDevicesObservedAsLearned(t *testing.T) {
	tb := startBridge(t, learnedObserveRules, nil)
	nat, dev, obs, temp := startObservedNATDevice(t, tb)
	temps := subscribe(t, tb.MQTTAddr(), "temp/#", 1)

	temp.Store(20)
	dev.pushUp(t, "dev-o", "hello")
	temps.waitFor(t, 10*time.Second, "temp/dev-o", "20")
	testkit.Eventually(t, 10*time.Second, "observed through the NAT", func() bool { return obs.Observers("/temp") == 1 })
	temp.Store(21)
	obs.Notify("/temp")
	temps.waitFor(t, 5*time.Second, "temp/dev-o", "21")

	if _, err := nat.Rebind(dev.self()); err != nil {
		t.Fatal(err)
	}
	temp.Store(22)
	dev.pushUp(t, "dev-o", "back")
	// The observation made again at the new binding answers with the
	// current value; later notifications follow.
	temps.waitFor(t, 10*time.Second, "temp/dev-o", "22")
	for v := int64(23); v <= 25; v++ {
		temp.Store(v)
		obs.Notify("/temp")
		temps.waitFor(t, 5*time.Second, "temp/dev-o", strconv.FormatInt(v, 10))
	}
	// The observation at the old binding is given up (its deregistration
	// goes nowhere): one is left.
	testkit.Eventually(t, 20*time.Second, "one observation", func() bool {
		return testutil.ToFloat64(tb.metrics.observations) == 1
	})
}

// TestLearnedListedDevicePolledOnceLearned: a [[device]] without url
// listed in a poll rule is polled as soon as it is learned, here from a
// GET on a resource rule, through the NAT; until then each poll fails.
func TestLearnedListedDevicePolledOnceLearned(t *testing.T) {
	tb := startBridge(t, learnedRules+`
[[poll]]
name     = "battery"
devices  = ["quiet"]
paths    = ["/battery"]
interval = "2s"
topic    = "bat/{device}"

[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"
`, nil)
	nat := peer.StartNAT(t, tb.CoAPAddr().(*net.UDPAddr), 0)
	dev := startNATDevice(t, nat)
	dev.mux.HandleFunc("GET /battery", func(w coapside.ResponseWriter, r *coapside.Request) { w.Write([]byte("87")) })
	bats := subscribe(t, tb.MQTTAddr(), "bat/#", 1)
	testkit.Eventually(t, 10*time.Second, "poll of a device not learned yet failed", func() bool {
		return testutil.ToFloat64(tb.metrics.errors.WithLabelValues("battery", reasonUnknownDevice)) >= 1
	})

	resp, err := dev.push.Get(t.Context(), "coap://"+nat.Addr().String()+"/config/quiet")
	if err != nil || resp.Code.Class() != 2 && resp.Code != message.NotFound {
		t.Fatalf("GET on the resource rule: %v %v", resp, err)
	}
	if ld, ok := tb.learned.lookup("quiet"); !ok || ld.Addr.String() != nat.External(dev.self()).String() {
		t.Fatalf("a GET on a resource rule did not learn the device: %+v %v", ld, ok)
	}
	bats.waitFor(t, 10*time.Second, "bat/quiet", "87")
	if got := dev.nextRequest(t); got.path != "/battery" || got.from.String() != nat.Addr().String() {
		t.Fatalf("device got %+v", got)
	}
}

// TestLearnedWatchesAddedByReload: a reload that adds a rule with
// devices = ["*"] starts its watches on the devices learned before it.
func TestLearnedWatchesAddedByReload(t *testing.T) {
	tb := startBridge(t, learnedRules, nil)
	nat := peer.StartNAT(t, tb.CoAPAddr().(*net.UDPAddr), 0)
	dev := startNATDevice(t, nat)
	dev.mux.HandleFunc("GET /battery", func(w coapside.ResponseWriter, r *coapside.Request) { w.Write([]byte("64")) })
	bats := subscribe(t, tb.MQTTAddr(), "bat/#", 1)
	dev.pushUp(t, "dev-r", "1")

	tb.writeRules(t, learnedRules+`
[[poll]]
name     = "battery"
devices  = ["*"]
paths    = ["/battery"]
interval = "2s"
topic    = "bat/{device}"
`)
	bats.waitFor(t, 15*time.Second, "bat/dev-r", "64")
	if run := tb.watchRun("poll dev-r /battery"); run == nil {
		t.Error("no running poll of the learned device")
	}
}

// TestLearnedDevicePolledOnlyAwake: a learned device is polled inside its
// awake window after each uplink and not while it sleeps: a poll then
// would only wait for a radio that is off.
func TestLearnedDevicePolledOnlyAwake(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("GET /battery", func(w coapside.ResponseWriter, r *coapside.Request) { w.Write([]byte("87")) })
	tb := startBridge(t, learnedRules+`
[[poll]]
name     = "battery"
devices  = ["*"]
paths    = ["/battery"]
interval = "100ms"
topic    = "bat/{device}"
`, withPresence(400*time.Millisecond, time.Minute))
	push := dev.pusher(t)
	up := func() { t.Helper(); pushOK(t, push, tb.coapURL("/up/d1")) }
	up()
	testkit.Eventually(t, 5*time.Second, "polled while awake", func() bool { return dev.count() >= 1 })
	time.Sleep(600 * time.Millisecond) // past the awake window
	asleep := dev.count()
	time.Sleep(time.Second)
	if n := dev.count(); n != asleep {
		t.Fatalf("%d polls while the device slept", n-asleep)
	}
	up()
	testkit.Eventually(t, 5*time.Second, "polled again after the next uplink", func() bool { return dev.count() > asleep })
}

// TestLearnedDeviceObservedAgainWhenItWakes: a sleepy device forgets its
// observers while its radio is off. Its first uplink after it slept makes
// the bridge register again at once, not only once Max-Age (60 s here)
// has passed, when the device may be asleep again; an uplink inside the
// awake window sends no registration.
func TestLearnedDeviceObservedAgainWhenItWakes(t *testing.T) {
	const awake = 400 * time.Millisecond
	tb := startBridge(t, learnedObserveRules, withPresence(awake, time.Minute))
	dev, obs, temp := startForgetfulDevice(t)
	push := dev.pusher(t)
	up := func() { t.Helper(); pushOK(t, push, tb.coapURL("/up/dev-w")) }
	temps := subscribe(t, tb.MQTTAddr(), "temp/#", 1)

	temp.Store(20)
	up()
	temps.waitFor(t, 10*time.Second, "temp/dev-w", "20")
	up() // awake still: the observation holds
	time.Sleep(100 * time.Millisecond)
	if h, _ := tb.watches.observationHealth("dev-w"); h.Active != 1 || h.Reregistrations != 0 {
		t.Fatalf("after two uplinks in one awake window: %+v, want 1 active, no re-registration", h)
	}

	time.Sleep(2 * awake) // asleep: it forgets its observers
	obs.Store(runObserveServer(t))
	temp.Store(21)
	up()
	temps.waitFor(t, 5*time.Second, "temp/dev-w", "21")
	testkit.Eventually(t, 5*time.Second, "registered again", func() bool { return obs.Load().Observers("/temp") == 1 })
	temp.Store(22)
	obs.Load().Notify("/temp")
	temps.waitFor(t, 5*time.Second, "temp/dev-w", "22")
	if h, _ := tb.watches.observationHealth("dev-w"); h.Active != 1 || h.Reregistrations != 1 {
		t.Errorf("observation health %+v, want 1 active, 1 re-registration", h)
	}

	// Silent in pushes past its awake window but notifying meanwhile: its
	// observation is alive, and its next push registers nothing again.
	time.Sleep(2 * awake)
	temp.Store(23)
	obs.Load().Notify("/temp")
	temps.waitFor(t, 5*time.Second, "temp/dev-w", "23")
	up()
	time.Sleep(200 * time.Millisecond)
	if h, _ := tb.watches.observationHealth("dev-w"); h.Active != 1 || h.Reregistrations != 1 {
		t.Errorf("after a push from a device that notified while silent: %+v, want 1 active, still 1 re-registration", h)
	}
}

// TestLearnedDeviceRegisteredWithOnlyAwake: an observation of a learned
// device that fails is retried inside its awake window and not while it
// sleeps (a registration then would only wait for a radio that is off);
// its next uplink retries at once.
func TestLearnedDeviceRegisteredWithOnlyAwake(t *testing.T) {
	const awake = 400 * time.Millisecond
	presence := withPresence(awake, time.Minute)
	tb := startBridge(t, learnedObserveRules, func(c *Config, o *Options) {
		presence(c, o)
		o.ReobserveMin, o.ReobserveMax = 50*time.Millisecond, 100*time.Millisecond
	})
	dev := startDevice(t, "")
	dev.mux.HandleFunc("GET /temp", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.NotFound) })
	push := dev.pusher(t)
	up := func() { t.Helper(); pushOK(t, push, tb.coapURL("/up/dev-s")) }

	up()
	testkit.Eventually(t, 5*time.Second, "retried while awake", func() bool { return dev.requested("/temp") >= 2 })
	time.Sleep(awake + 200*time.Millisecond)
	asleep := dev.requested("/temp")
	time.Sleep(time.Second)
	if n := dev.requested("/temp"); n != asleep {
		t.Fatalf("%d registrations sent while the device slept", n-asleep)
	}
	up()
	testkit.Eventually(t, 2*time.Second, "registered at the next uplink", func() bool { return dev.requested("/temp") > asleep })
}

// TestLearnedDeviceMovesAreNotObservationLosses: an observation given
// up because its device moved (its deregistration at the old binding
// fails at once: the port is closed) is not an observation lost: no
// error is counted or logged for the move.
func TestLearnedDeviceMovesAreNotObservationLosses(t *testing.T) {
	tb := startBridge(t, learnedObserveRules, nil)
	nat, dev, _, temp := startObservedNATDevice(t, tb)
	temps := subscribe(t, tb.MQTTAddr(), "temp/#", 1)
	for i := range 8 {
		if i > 0 {
			if _, err := nat.Rebind(dev.self()); err != nil {
				t.Fatal(err)
			}
		}
		temp.Store(int64(i))
		dev.pushUp(t, "dev-m", "x")
		temps.waitFor(t, 10*time.Second, "temp/dev-m", strconv.Itoa(i))
	}
	testkit.Eventually(t, 10*time.Second, "one observation", func() bool {
		return testutil.ToFloat64(tb.metrics.observations) == 1
	})
	if n := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("every", reasonObservationLost)); n != 0 {
		t.Errorf("%v observations counted lost over 7 moves, want 0", n)
	}
}

// TestShutdownDeregistersLearnedDevicesObservations: a learned device is
// observed from the bridge's own CoAP port, so that port stays open at a
// shutdown until the observation is deregistered (GET Observe=1, RFC 7641
// §3.6): the device drops its observer, and the end is no loss.
func TestShutdownDeregistersLearnedDevicesObservations(t *testing.T) {
	tb := startBridge(t, learnedObserveRules, nil)
	dev := startDevice(t, "")
	obs := runObserveServer(t)
	dev.mux.Handle("GET /temp", obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte("20"))
	})))
	pushOK(t, dev.pusher(t), tb.coapURL("/up/dev-d"))
	testkit.Eventually(t, 10*time.Second, "observed", func() bool {
		return obs.Observers("/temp") == 1 && testutil.ToFloat64(tb.metrics.observations) == 1
	})

	tb.stop(t)
	if n := obs.Observers("/temp"); n != 0 {
		t.Errorf("%d observers left at the device after the shutdown, want 0", n)
	}
	for _, w := range tb.warnings.logged() {
		if strings.Contains(w, "observation ended") {
			t.Errorf("logged at shutdown: %s", w)
		}
	}
}

// TestLearnedDeviceOneUplinkObservedAgainWhenItWakes: a sleepy device
// that pushes once per wake, registered with right after that push,
// forgets its observers while its radio is off. The registration's answer
// came in its awake window, not while it slept: its next uplink registers
// again.
func TestLearnedDeviceOneUplinkObservedAgainWhenItWakes(t *testing.T) {
	const awake = 400 * time.Millisecond
	tb := startBridge(t, learnedObserveRules, withPresence(awake, time.Minute))
	dev, obs, temp := startForgetfulDevice(t)
	push := dev.pusher(t)
	up := func() { t.Helper(); pushOK(t, push, tb.coapURL("/up/dev-o")) }
	temps := subscribe(t, tb.MQTTAddr(), "temp/#", 1)

	temp.Store(20)
	up()
	temps.waitFor(t, 10*time.Second, "temp/dev-o", "20")
	time.Sleep(2 * awake) // asleep: it forgets its observers
	obs.Store(runObserveServer(t))
	temp.Store(21)
	up()
	temps.waitFor(t, 5*time.Second, "temp/dev-o", "21")
	testkit.Eventually(t, 5*time.Second, "registered again", func() bool { return obs.Load().Observers("/temp") == 1 })
	if h, _ := tb.watches.observationHealth("dev-o"); h.Active != 1 || h.Reregistrations != 1 {
		t.Errorf("observation health %+v, want 1 active, 1 re-registration", h)
	}
}

// TestLearnedDeviceNotReregisteredAsleep: when Max-Age runs out while a
// learned device sleeps, no re-registration is sent (it would only go
// unanswered and count the observation lost); the observation holds and
// is registered again at the device's next uplink.
func TestLearnedDeviceNotReregisteredAsleep(t *testing.T) {
	const awake = 400 * time.Millisecond
	tb := startBridge(t, learnedObserveRules, withPresence(awake, time.Minute))
	dev := startDevice(t, "")
	obs := runObserveServer(t)
	dev.mux.Handle("GET /temp", obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		// Max-Age 1: the bridge re-registers 2 s after the last notification.
		*w.Options() = w.Options().SetUint(message.MaxAge, 1)
		w.Write([]byte("20"))
	})))
	push := dev.pusher(t)
	up := func() { t.Helper(); pushOK(t, push, tb.coapURL("/up/dev-m")) }
	temps := subscribe(t, tb.MQTTAddr(), "temp/#", 1)

	up()
	temps.waitFor(t, 10*time.Second, "temp/dev-m", "20")
	registered := dev.requested("/temp")
	time.Sleep(3 * time.Second) // asleep past Max-Age and its margin
	if n := dev.requested("/temp"); n != registered {
		t.Fatalf("%d re-registrations sent while the device slept", n-registered)
	}
	if h, _ := tb.watches.observationHealth("dev-m"); h.Active != 1 {
		t.Fatalf("observation health while asleep %+v, want it held", h)
	}
	up()
	testkit.Eventually(t, 5*time.Second, "registered again at the next uplink", func() bool { return dev.requested("/temp") > registered })
	if h, _ := tb.watches.observationHealth("dev-m"); h.Active != 1 || h.Reobserved != 0 {
		t.Errorf("observation health %+v, want 1 active, none lost", h)
	}
}

// TestShutdownForgetsAsleepDevicesObservations: a learned device asleep
// at a shutdown is sent no deregistration (its radio is off: it would
// only go unanswered, holding the shutdown); its observation is
// forgotten, and its next notification to the bridge's port would get
// RST.
func TestShutdownForgetsAsleepDevicesObservations(t *testing.T) {
	const awake = 300 * time.Millisecond
	tb := startBridge(t, learnedObserveRules, withPresence(awake, time.Minute))
	dev := startDevice(t, "")
	obs := runObserveServer(t)
	dev.mux.Handle("GET /temp", obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte("20"))
	})))
	pushOK(t, dev.pusher(t), tb.coapURL("/up/dev-z"))
	testkit.Eventually(t, 10*time.Second, "observed", func() bool {
		return obs.Observers("/temp") == 1 && testutil.ToFloat64(tb.metrics.observations) == 1
	})
	time.Sleep(2 * awake) // asleep
	sent := dev.requested("/temp")

	tb.stop(t)
	if n := dev.requested("/temp"); n != sent {
		t.Errorf("%d requests sent to the sleeping device at the shutdown, want none", n-sent)
	}
}

// startObservedNATDevice starts a device behind a NAT in front of tb
// whose /temp is observable and serves temp's value.
func startObservedNATDevice(t *testing.T, tb *testBridge) (*peer.LossyProxy, *natDevice, *coapside.ObserveServer, *atomic.Int64) {
	t.Helper()
	nat := peer.StartNAT(t, tb.CoAPAddr().(*net.UDPAddr), 0)
	dev := startNATDevice(t, nat)
	obs := runObserveServer(t)
	temp := new(atomic.Int64)
	dev.mux.Handle("GET /temp", obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte(strconv.FormatInt(temp.Load(), 10)))
	})))
	return nat, dev, obs, temp
}

// startForgetfulDevice starts a device whose /temp is observable and
// serves temp's value. Its observers live in the ObserveServer obs holds:
// storing a new one is a device that forgot them (asleep, or rebooted).
func startForgetfulDevice(t *testing.T) (*fakeDevice, *atomic.Pointer[coapside.ObserveServer], *atomic.Int64) {
	t.Helper()
	dev := startDevice(t, "")
	obs := new(atomic.Pointer[coapside.ObserveServer])
	obs.Store(runObserveServer(t))
	temp := new(atomic.Int64)
	value := coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte(strconv.FormatInt(temp.Load(), 10)))
	})
	dev.mux.Handle("GET /temp", coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		obs.Load().Observable(value).ServeCOAP(w, r)
	}))
	return dev, obs, temp
}
