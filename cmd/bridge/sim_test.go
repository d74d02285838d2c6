package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/coap-mqtt/bridge/rules"
)

// startFleet runs a fleet on ephemeral ports until cleanup.
func startFleet(t *testing.T, o simOptions) *simFleet {
	t.Helper()
	if o.ListenHost == "" {
		o.ListenHost = "127.0.0.1"
	}
	if o.Interval == 0 {
		o.Interval = 40 * time.Millisecond
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	f, err := newSimFleet(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// newTestClient is a CoAP client closed at cleanup.
func newTestClient(t *testing.T) *coapside.Client {
	t.Helper()
	c, err := coapside.NewClient(coapside.ClientOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ledOf reads a device's LED state.
func ledOf(d *simDevice) bool {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	return d.led
}

func devURL(d *simDevice, path string) string { return "coap://" + d.Addr().String() + path }

func TestSimFleetResources(t *testing.T) {
	verifyNoLeaks(t)
	f := startFleet(t, simOptions{Devices: 3, Interval: time.Hour})
	c := newTestClient(t)
	ctx := context.Background()
	ports := map[int]bool{}
	for i, d := range f.Devices() {
		if d.name != fmt.Sprintf("sim-%d", i) {
			t.Errorf("device %d named %q", i, d.name)
		}
		ports[d.Addr().Port] = true
		for _, tc := range []struct {
			path     string
			min, max float64
		}{
			{simPathTemp, 10, 35},
			{simPathHumidity, 0, 100},
			{simPathBattery, 0, 100},
		} {
			resp, err := c.Get(ctx, devURL(d, tc.path))
			if err != nil {
				t.Fatalf("%s %s: %v", d.name, tc.path, err)
			}
			cf, ok := resp.Options.ContentFormat()
			if resp.Code != message.Content || !ok || cf != message.TextPlain {
				t.Fatalf("%s %s: %v Content-Format %v", d.name, tc.path, resp.Code, cf)
			}
			v, err := strconv.ParseFloat(string(resp.Payload), 64)
			if err != nil || v < tc.min || v > tc.max {
				t.Errorf("%s %s = %q, want a number in %v..%v", d.name, tc.path, resp.Payload, tc.min, tc.max)
			}
			if resp.Options.MaxAge() == 0 {
				t.Errorf("%s %s without Max-Age", d.name, tc.path)
			}
		}
	}
	if len(ports) != 3 {
		t.Errorf("devices share ports: %v", ports)
	}

	// The LED actuator: PUT on/off answers 2.04 and GET returns the state.
	d := f.Devices()[1]
	get := func() string {
		t.Helper()
		resp, err := c.Get(ctx, devURL(d, simPathLED))
		if err != nil || resp.Code != message.Content {
			t.Fatalf("GET led: %v %v", resp, err)
		}
		return string(resp.Payload)
	}
	if s := get(); s != "off" {
		t.Fatalf("LED initially %q", s)
	}
	for _, tc := range []struct {
		payload string
		code    message.Code
		state   string
	}{
		{"on", message.Changed, "on"},
		{"off", message.Changed, "off"},
		{" ON\n", message.Changed, "on"},
		{"blue", message.BadRequest, "on"},
		{"", message.BadRequest, "on"},
		{"0", message.Changed, "off"},
	} {
		resp, err := c.Put(ctx, devURL(d, simPathLED), message.TextPlain, []byte(tc.payload))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code != tc.code {
			t.Errorf("PUT %q: %v, want %v", tc.payload, resp.Code, tc.code)
		}
		if tc.code == message.BadRequest && !strings.Contains(string(resp.Payload), "want on or off") {
			t.Errorf("PUT %q diagnostic %q", tc.payload, resp.Payload)
		}
		if s := get(); s != tc.state {
			t.Errorf("after PUT %q LED is %q, want %q", tc.payload, s, tc.state)
		}
	}
	if ledOf(f.Devices()[0]) {
		t.Error("PUT on sim-1 switched sim-0's LED")
	}
	resp, err := c.Delete(ctx, devURL(d, simPathLED))
	if err != nil || resp.Code != message.MethodNotAllowed {
		t.Errorf("DELETE led: %v %v", resp, err)
	}
	resp, err = c.Get(ctx, devURL(d, "/nope"))
	if err != nil || resp.Code != message.NotFound {
		t.Errorf("GET /nope: %v %v", resp, err)
	}
}

func TestSimFleetDiscovery(t *testing.T) {
	verifyNoLeaks(t)
	f := startFleet(t, simOptions{Devices: 1, Format: simSenML})
	c := newTestClient(t)
	links, err := c.Discover(context.Background(), "coap://"+f.Devices()[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		rt, ifc, ct string
		obs         bool
	}{
		simPathTemp:     {"temperature", "sensor", "110", true},
		simPathHumidity: {"humidity", "sensor", "110", true},
		simPathBattery:  {"battery", "sensor", "110", false},
		simPathLED:      {"led", "actuator", "0", true},
	}
	if len(links) != len(want) {
		t.Fatalf("discovery lists %d links: %v", len(links), links)
	}
	for _, l := range links {
		w, ok := want[l.Target]
		rt, _ := l.Param("rt")
		ifc, _ := l.Param("if")
		ct, _ := l.Param("ct")
		if !ok || rt != w.rt || ifc != w.ifc || ct != w.ct || l.Has("obs") != w.obs {
			t.Errorf("link %v, want %+v", l, w)
		}
	}
	// Filters as a bridge's discover = "rt=temperature" rule sends them.
	links, err = c.Discover(context.Background(), "coap://"+f.Devices()[0].Addr().String(), "rt=temperature")
	if err != nil || len(links) != 1 || links[0].Target != simPathTemp {
		t.Fatalf("rt=temperature: %v %v", links, err)
	}
}

// observeN observes url until n notifications arrived and returns them.
func observeN(t *testing.T, c *coapside.Client, url string, n int) []coapside.Notification {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var (
		mu   sync.Mutex
		got  []coapside.Notification
		done = make(chan struct{})
	)
	o, err := c.Observe(ctx, url, func(nt coapside.Notification) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, nt)
		if len(got) == n {
			close(done)
		}
	})
	if err != nil {
		t.Fatalf("observe %s: %v", url, err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("observe %s: only %d notifications", url, len(got))
	}
	if err := o.Cancel(ctx); err != nil {
		t.Errorf("cancel: %v", err)
	}
	o.Wait()
	mu.Lock()
	defer mu.Unlock()
	return append([]coapside.Notification(nil), got[:n]...)
}

func TestSimFleetObserve(t *testing.T) {
	verifyNoLeaks(t)
	f := startFleet(t, simOptions{Devices: 3})
	c := newTestClient(t)
	for _, d := range f.Devices() {
		for _, path := range []string{simPathTemp, simPathHumidity} {
			ns := observeN(t, c, devURL(d, path), 3)
			for i, n := range ns {
				if n.Code != message.Content || !n.HasSeq {
					t.Fatalf("%s %s notification %d: %v Observe %v", d.name, path, i, n.Code, n.HasSeq)
				}
				if _, err := strconv.ParseFloat(string(n.Payload), 64); err != nil {
					t.Errorf("%s %s payload %q", d.name, path, n.Payload)
				}
			}
		}
		// RFC 7641 §3.6: the cancels deregistered the observers.
		testkit.Eventually(t, 2*time.Second, "deregistration", func() bool { return d.Observers(simPathTemp)+d.Observers(simPathHumidity) == 0 })
	}
}

func TestSimFleetRebootDropsObservers(t *testing.T) {
	verifyNoLeaks(t)
	f := startFleet(t, simOptions{Devices: 2})
	d := f.Devices()[0]
	addr := d.Addr().String()
	c := newTestClient(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu    sync.Mutex
		count int
	)
	o, err := c.Observe(ctx, devURL(d, simPathTemp), func(coapside.Notification) {
		mu.Lock()
		count++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Wait()
	defer cancel()
	if _, err := c.Put(context.Background(), devURL(d, simPathLED), message.TextPlain, []byte("on")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, "registration", func() bool { return d.Observers(simPathTemp) == 1 })

	if err := f.Reboot(0); err != nil {
		t.Fatal(err)
	}
	if n := d.Observers(simPathTemp); n != 0 {
		t.Fatalf("observers after reboot: %d", n)
	}
	if d.Addr().String() != addr {
		t.Errorf("rebooted on %s, was %s", d.Addr(), addr)
	}
	// The old observation hears nothing more.
	mu.Lock()
	before := count
	mu.Unlock()
	time.Sleep(5 * f.opts.Interval)
	mu.Lock()
	after := count
	mu.Unlock()
	if after != before {
		t.Errorf("old observation got %d notifications after the reboot", after-before)
	}
	if n := f.Devices()[1].Observers(simPathTemp); n != 0 {
		t.Errorf("sim-1 has %d observers", n)
	}
	// The LED is off after power-up, and a client can observe again.
	resp, err := c.Get(context.Background(), devURL(d, simPathLED))
	if err != nil || string(resp.Payload) != "off" {
		t.Errorf("LED after reboot: %v %v", resp, err)
	}
	c2 := newTestClient(t)
	ns := observeN(t, c2, devURL(d, simPathTemp), 2)
	if len(ns) != 2 {
		t.Fatalf("re-observation got %d notifications", len(ns))
	}
}

// TestSimRebootRestartsObserveNumbers: as the help says and as a device
// without a clock that survives power-down does, a reboot restarts the
// Observe numbers from a low value, below those of the previous boot.
func TestSimRebootRestartsObserveNumbers(t *testing.T) {
	verifyNoLeaks(t)
	f := startFleet(t, simOptions{Devices: 1})
	d := f.Devices()[0]
	ticks := func() uint32 {
		d.netMu.Lock()
		defer d.netMu.Unlock()
		return d.cur.ticks.Load()
	}
	testkit.Eventually(t, 5*time.Second, "20 sensor updates", func() bool { return ticks() >= 20 })
	c := newTestClient(t)
	before := observeN(t, c, devURL(d, simPathTemp), 1)[0].Seq
	if err := f.Reboot(0); err != nil {
		t.Fatal(err)
	}
	after := observeN(t, c, devURL(d, simPathTemp), 1)[0].Seq
	if after >= before {
		t.Fatalf("Observe %d after the reboot, %d before it: the sequence did not restart", after, before)
	}
}

func TestSimFleetRebootEvery(t *testing.T) {
	verifyNoLeaks(t)
	f := startFleet(t, simOptions{Devices: 1, RebootEvery: 100 * time.Millisecond})
	d := f.Devices()[0]
	testkit.Eventually(t, 3*time.Second, "periodic reboots", func() bool {
		d.netMu.Lock()
		defer d.netMu.Unlock()
		return d.boots >= 3
	})
	c := newTestClient(t)
	resp, err := c.Get(context.Background(), devURL(d, simPathBattery))
	if err != nil || resp.Code != message.Content {
		t.Fatalf("GET after reboots: %v %v", resp, err)
	}
}

func TestSimFormats(t *testing.T) {
	verifyNoLeaks(t)
	for _, tc := range []struct {
		format simFormat
		cf     message.MediaType
	}{
		{simText, message.TextPlain},
		{simJSON, message.AppJSON},
		{simCBOR, message.AppCBOR},
		{simSenML, message.AppSenMLJSON},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			f := startFleet(t, simOptions{Devices: 1, Format: tc.format, Interval: time.Hour})
			c := newTestClient(t)
			resp, err := c.Get(context.Background(), devURL(f.Devices()[0], simPathTemp))
			if err != nil {
				t.Fatal(err)
			}
			cf, _ := resp.Options.ContentFormat()
			if cf != tc.cf {
				t.Fatalf("Content-Format %v, want %v", cf, tc.cf)
			}
			v, err := rules.Decode(rules.Payload{Data: resp.Payload, Format: cf, HasFormat: true}, time.Now())
			if err != nil {
				t.Fatalf("payload %q: %v", resp.Payload, err)
			}
			var temp float64
			switch x := v.(type) {
			case float64:
				temp = x
			case map[string]any:
				temp, _ = x["value"].(float64)
			case []any: // SenML records (RFC 8428)
				rec, _ := x[0].(map[string]any)
				temp, _ = rec["v"].(float64)
				if rec["n"] != "urn:dev:sim-0:temp" || rec["u"] != "Cel" {
					t.Errorf("SenML record %v", rec)
				}
			}
			if temp < 10 || temp > 35 {
				t.Errorf("decoded %#v, no plausible temperature", v)
			}
		})
	}
}

func TestSimSeedReproducible(t *testing.T) {
	verifyNoLeaks(t)
	read := func(seed uint64) string {
		f := startFleet(t, simOptions{Devices: 2, Seed: seed, Interval: time.Hour})
		c := newTestClient(t)
		var vals []string
		for _, d := range f.Devices() {
			for _, p := range []string{simPathTemp, simPathHumidity, simPathBattery} {
				resp, err := c.Get(context.Background(), devURL(d, p))
				if err != nil {
					t.Fatal(err)
				}
				vals = append(vals, string(resp.Payload))
			}
		}
		return strings.Join(vals, " ")
	}
	a, b, other := read(42), read(42), read(43)
	if a != b {
		t.Errorf("same seed, different data: %s / %s", a, b)
	}
	if a == other {
		t.Errorf("different seeds, same data: %s", a)
	}
}

func TestSensorModelPlausible(t *testing.T) {
	d := newSimDevice("sim-0", "sim-0", nil, nil, &simOptions{Interval: time.Second, Format: simText, Logger: slog.New(slog.DiscardHandler)}, 7, 0)
	prevT, prevB := d.tempV, d.batV
	sp := d.temp.setPoint
	for range 10000 {
		d.tick()
		if diff := d.tempV - prevT; diff > 0.5 || diff < -0.5 {
			t.Fatalf("temperature jumped %.2f -> %.2f", prevT, d.tempV)
		}
		if d.tempV < sp-5 || d.tempV > sp+5 {
			t.Fatalf("temperature %.2f wandered far from %.2f", d.tempV, sp)
		}
		if d.humV < 0 || d.humV > 100 {
			t.Fatalf("humidity %.2f", d.humV)
		}
		if d.batV > prevB && d.batV != 100 {
			t.Fatalf("battery rose %.2f -> %.2f without recharge", prevB, d.batV)
		}
		prevT, prevB = d.tempV, d.batV
	}
}

func TestParseLED(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
		err  bool
	}{
		{"on", true, false}, {"OFF", false, false}, {"1", true, false}, {"0", false, false},
		{"true", true, false}, {" false \n", false, false}, {"", false, true}, {"onn", false, true},
		{strings.Repeat("x", 100), false, true},
	} {
		got, err := parseLED([]byte(tc.in))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseLED(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// FuzzParseLED: the LED's PUT payload comes from the network.
func FuzzParseLED(f *testing.F) {
	for _, s := range []string{"on", "off", "ON\n", "", "\xff\x00", "1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		on, err := parseLED(p)
		if err != nil && on {
			t.Fatal("error with state on")
		}
		// At most 32 bytes of the payload, each quoted as \xNN at worst.
		if err != nil && len(err.Error()) > 32*4+40 {
			t.Fatalf("diagnostic too long: %d bytes", len(err.Error()))
		}
	})
}

func TestSimOptionsRejected(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"no devices", []string{"--devices", "0"}, "--devices"},
		{"host name", []string{"--listen-host", "localhost"}, "--listen-host"},
		{"ports past 65535", []string{"--devices", "10", "--base-port", "65530"}, "65535"},
		{"dtls ports past 65535", []string{"--devices", "10", "--base-port", "65520", "--psk-key", "k"}, "--dtls-base-port"},
		{"format", []string{"--format", "xml"}, "--format"},
		{"interval", []string{"--interval", "0s"}, "--interval"},
		{"key", []string{"--psk-key", "hex:zz"}, "--psk-key"},
		{"log level", []string{"--log-level", "loud"}, "--log-level"},
		{"argument", []string{"extra"}, "no arguments"},
		{"flag", []string{"--nope"}, "unknown flag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, append([]string{"sim"}, tc.args...)...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, exitUsage, errOut)
			}
			if !strings.Contains(errOut, tc.msg) {
				t.Errorf("stderr %q lacks %q", errOut, tc.msg)
			}
		})
	}
}

func TestSimPortInUse(t *testing.T) {
	verifyNoLeaks(t)
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.LocalAddr().(*net.UDPAddr).Port
	code, _, errOut := runCLI(t, "sim", "--devices", "1", "--base-port", strconv.Itoa(port))
	if code != 1 || !strings.Contains(errOut, "sim-0") || !strings.Contains(errOut, "address already in use") {
		t.Fatalf("exit %d stderr %q", code, errOut)
	}
}

// TestSimCommandSignals runs "bridge sim" in-process: SIGUSR1 reboots the
// devices and SIGTERM stops it with exit code 0.
func TestSimCommandSignals(t *testing.T) {
	verifyNoLeaks(t)
	var out, errb testkit.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- execute([]string{"sim", "--devices", "2", "--base-port", "0", "--interval", "50ms", "--seed", "5"}, &out, &errb)
	}()
	// The signal handlers are installed before the fleet reports running.
	testkit.Eventually(t, 5*time.Second, "fleet start", func() bool { return strings.Contains(errb.String(), "sim fleet running") })
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "reboot on SIGUSR1", func() bool { return strings.Count(errb.String(), "sim device rebooted") == 2 })
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", code, errb.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sim did not stop on SIGTERM")
	}
	logs := errb.String()
	for _, want := range []string{"device=sim-0", "device=sim-1", "seed=5", "sim fleet stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

func TestSimDTLS(t *testing.T) {
	verifyNoLeaks(t)
	key, err := keys.ParseKey("hex:a0a1a2a3a4a5a6a7")
	if err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, simOptions{Devices: 2, PSK: key, PSKIdentityPrefix: "node-", Interval: time.Hour})
	for i, d := range f.Devices() {
		url := "coaps://" + d.DTLSAddr().String() + simPathBattery
		code, out, errOut := runCLI(t, "coap", "get", "--psk-identity", fmt.Sprintf("node-%d", i), "--psk-key", "hex:a0a1a2a3a4a5a6a7", url)
		if code != 0 {
			t.Fatalf("%s: exit %d stderr %q", d.name, code, errOut)
		}
		if _, err := strconv.ParseFloat(strings.TrimSpace(out), 64); err != nil {
			t.Errorf("%s battery %q", d.name, out)
		}
	}
	// Device 0's identity is not accepted by device 1.
	url := "coaps://" + f.Devices()[1].DTLSAddr().String() + simPathBattery
	if code, _, _ := runCLI(t, "coap", "get", "--timeout", "1s", "--psk-identity", "node-0", "--psk-key", "hex:a0a1a2a3a4a5a6a7", url); code != exitTransport {
		t.Errorf("foreign identity: exit %d, want %d", code, exitTransport)
	}
	// After a reboot the coaps listener is back on the same port and a new
	// handshake succeeds.
	addr := f.Devices()[0].DTLSAddr().String()
	if err := f.Reboot(0); err != nil {
		t.Fatal(err)
	}
	if got := f.Devices()[0].DTLSAddr().String(); got != addr {
		t.Errorf("coaps listener moved from %s to %s", addr, got)
	}
	if code, _, errOut := runCLI(t, "coap", "get", "--psk-identity", "node-0", "--psk-key", "hex:a0a1a2a3a4a5a6a7", "coaps://"+addr+simPathTemp); code != 0 {
		t.Errorf("coaps GET after reboot: exit %d %s", code, errOut)
	}
	// Plain CoAP stays available beside coaps.
	if code, _, errOut := runCLI(t, "coap", "get", devURL(f.Devices()[0], simPathTemp)); code != 0 {
		t.Errorf("plain GET: exit %d %s", code, errOut)
	}
}

func TestSimCoapCommandTable(t *testing.T) {
	verifyNoLeaks(t)
	f := startFleet(t, simOptions{Devices: 1})
	base := "coap://" + f.Devices()[0].Addr().String()
	code, out, errOut := runCLI(t, "coap", "discover", "--query", "if=actuator", base)
	if code != 0 || !strings.Contains(out, "/actuators/led") || !strings.Contains(out, "led") || strings.Contains(out, "/sensors/temp") {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "coap", "observe", "--count", "2", base+simPathHumidity)
	if code != 0 || len(strings.Fields(out)) != 2 {
		t.Fatalf("observe: exit %d stdout %q stderr %q", code, out, errOut)
	}
}

// TestSimInteropLibcoap reads and observes the sim with libcoap's client.
func TestSimInteropLibcoap(t *testing.T) {
	bin := peer.Require(t, "coap-client-notls")
	verifyNoLeaks(t)
	f := startFleet(t, simOptions{Devices: 1, Interval: 200 * time.Millisecond})
	d := f.Devices()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	out, err := exec.CommandContext(ctx, bin, "-m", "get", devURL(d, simPathTemp)).CombinedOutput()
	if err != nil {
		t.Fatalf("coap-client get: %v: %s", err, out)
	}
	if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err != nil || v < 10 || v > 35 {
		t.Errorf("coap-client got %q", out)
	}

	out, err = exec.CommandContext(ctx, bin, "-m", "put", "-e", "on", devURL(d, simPathLED)).CombinedOutput()
	if err != nil {
		t.Fatalf("coap-client put: %v: %s", err, out)
	}
	if !ledOf(d) {
		t.Errorf("LED not switched by coap-client PUT (%s)", out)
	}

	// -s 3: observe for three seconds; -v 5 logs each received notification.
	out, err = exec.CommandContext(ctx, bin, "-s", "3", "-B", "4", devURL(d, simPathTemp)).CombinedOutput()
	if err != nil {
		t.Fatalf("coap-client observe: %v: %s", err, out)
	}
	// libcoap prints every payload without separators; text readings all
	// have two decimals, so count the decimal points.
	if n := strings.Count(string(out), "."); n < 3 {
		t.Errorf("coap-client -s 3 printed %d readings: %q", n, out)
	}
}

// TestSimFleetStartFailureStopsStarted: when a later device cannot listen,
// the devices already started are stopped again (no goroutine or socket
// left behind).
func TestSimFleetStartFailureStopsStarted(t *testing.T) {
	verifyNoLeaks(t)
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	f, err := newSimFleet(simOptions{Devices: 2, ListenHost: "127.0.0.1", Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f.devices[1].addr = busy.LocalAddr().(*net.UDPAddr)
	if err := f.Start(context.Background()); err == nil {
		f.Close()
		t.Fatal("Start succeeded on a busy port")
	}
	if n := f.devices[0].Observers(simPathTemp); n != 0 || f.devices[0].cur != nil {
		t.Errorf("sim-0 still running after the failed start")
	}
	f.Close()
}

// BenchmarkSimGet measures a confirmable GET round trip to one sim device
// over loopback.
func BenchmarkSimGet(b *testing.B) {
	f, err := newSimFleet(simOptions{Devices: 1, ListenHost: "127.0.0.1", Interval: time.Hour, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	c, err := coapside.NewClient(coapside.ClientOptions{Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	url := devURL(f.Devices()[0], simPathTemp)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get(ctx, url)
		if err != nil || resp.Code != message.Content {
			b.Fatalf("%v %v", resp, err)
		}
	}
}

// BenchmarkSimStart100 measures bringing up and tearing down 100 devices.
func BenchmarkSimStart100(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		f, err := newSimFleet(simOptions{Devices: 100, ListenHost: "127.0.0.1", Interval: time.Hour, Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
