package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// Environment of the soak run (e2e/soak.sh sets them).
const (
	// soakEnv holds the soak's length (a Go duration, e.g. 10m); unset, the
	// soak is skipped.
	soakEnv = "BRIDGE_SOAK"
	// soakOutEnv names the CSV file the sampled curve is written to; by
	// default a new file in the system's temporary folder.
	soakOutEnv = "BRIDGE_SOAK_OUT"
)

// The soak's shape.
const (
	soakGroups       = 10              // sim processes, rebooted one at a time
	soakPerGroup     = 100             // devices per sim process: 1,000 observed devices
	soakSimInterval  = 5 * time.Second // sensor updates: 200 notifications/s in all
	soakPushClients  = 256             // well-behaved pushing devices, one socket each
	soakPushIPs      = 16              // ... spread over 127.0.0.10 to .25
	soakPushPending  = 64              // requests one pushing device may have queued (the client's MaxQueuePerPeer)
	soakPushTries    = 10              // tries of one push answered 5.03 or 4.29
	soakObserved     = 20              // resource-rule topics observed over CoAP
	soakObserverSock = 4               // ... by this many clients
	soakCommandEvery = 100 * time.Millisecond
	soakRateLimit    = 2000 // coap.rate_limit per source address
	soakSampleEvery  = 10 * time.Second
	soakReloadEvery  = 30 * time.Second
	soakRebootEvery  = 90 * time.Second
	soakFloodLength  = 3 * time.Second
	soakOutage       = 2 * time.Second // the broker is down this long
	// soakGapLimit is the longest a device's notifications or a resource
	// observer's may pause. A rebooted device is registered with again after
	// its Max-Age (two intervals) and the margin (half of it): ~15 s.
	soakGapLimit = 45 * time.Second
	// soakCommandLimit is how long a command may wait for its result.
	soakCommandLimit = 2 * time.Minute
)

// Flatness: the median of the last third of the samples under load may
// exceed the middle third's by this fraction plus the absolute slack.
const (
	soakFlatFraction   = 0.05
	soakFlatRSSKB      = 8 * 1024
	soakFlatGoroutines = 25
	soakFlatFDs        = 5
)

// TestSoak runs the built bridge for BRIDGE_SOAK (e2e/soak.sh) against
// mosquitto and 1,000 simulated devices in 10 `bridge sim` processes, at
// half of the ingress peak it measures first: 64 well-behaved devices push
// (CON, QoS 1, retrying 5.03 and 4.29 after Max-Age), every device's
// temperature is observed, commands go to the devices' LEDs, CoAP clients
// observe 20 resource-rule topics fed over MQTT, the rule file is rewritten
// every 30 s, a sim process is killed and started again every 90 s (its 100
// devices reboot), mosquitto is restarted once and one source floods the
// CoAP port for 3 s. RSS, goroutines and open descriptors of the bridge are
// sampled every 10 s; the curve is printed and written as CSV. The test
// fails on any error among the well-behaved clients (a push answered 2.04
// and never published, or failing after its retries; a command without a
// result or with a failed one; a notification stream pausing past 45 s; a
// reload not applied) and on a curve that is not flat.
func TestSoak(t *testing.T) {
	spec := os.Getenv(soakEnv)
	if spec == "" {
		t.Skipf("set %s=10m (or run e2e/soak.sh) to run the soak", soakEnv)
	}
	length, err := time.ParseDuration(spec)
	if err != nil || length < 30*time.Second {
		t.Fatalf("%s=%q: want a duration of at least 30s", soakEnv, spec)
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		peer.Unavailable(t, "the soak samples /proc: %v", err)
	}
	s := &soak{t: t, length: length, stop: make(chan struct{})}
	s.setUp()
	s.measurePeak()
	s.run()
	s.drain()
	s.report()
}

// soak is one soak run; its methods run on the test goroutine unless they
// say otherwise.
type soak struct {
	t      *testing.T
	length time.Duration
	begin  time.Time // start of the soak proper
	// beginNs is begin for the subscriber's goroutine (0 before the start).
	beginNs atomic.Int64

	broker *peer.Mosquitto
	probe  *coapside.Client // checks that a sim process answers
	bridge *bridgeProc
	sims   []*soakSim

	pub, sub paho.Client
	pushers  []*soakPusher
	watchers []*soakWatcher
	devices  soakDevices
	commands soakCommands

	peak, rate float64       // pushes/s
	restAfter  time.Duration // how long the bridge took to come to rest after the load

	stop        chan struct{}  // closed when the load stops
	load        sync.WaitGroup // the load generators
	watching    sync.WaitGroup // the resource observers
	stopWatches context.CancelFunc
	pending     sync.WaitGroup // pushes and publishes under way

	mu       sync.Mutex
	errs     map[string]int // error class -> count
	examples []string       // the first errors, for the report
	events   []string       // since the last sample
	samples  []soakSample
	reloads  int

	pushRetries, pushSkipped, pushDuplicates, pubRetries atomic.Int64
	floodSent                                            int
	floodLimited                                         float64
}

// fail counts an error among the well-behaved clients; safe from any
// goroutine.
func (s *soak) fail(class, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.errs == nil {
		s.errs = map[string]int{}
	}
	s.errs[class]++
	if len(s.examples) < 20 {
		s.examples = append(s.examples, fmt.Sprintf("%s: %s", class, fmt.Sprintf(format, args...)))
	}
}

func (s *soak) event(format string, args ...any) {
	e := fmt.Sprintf("%s@%ds", fmt.Sprintf(format, args...), int(time.Since(s.begin).Seconds()))
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
	s.t.Log("event: " + e)
}

// soakSim is one `bridge sim` process serving soakPerGroup devices.
type soakSim struct {
	first, base int // global index of its first device, and that device's port
	runs        int
	p           *proc
	rebootedAt  atomic.Int64 // unix nanoseconds of the last restart
}

func (s *soak) startSim(g *soakSim) {
	t := s.t
	g.runs++
	g.p = start(t, t.TempDir(), nil, bridgeBin(t), "sim", "--devices", strconv.Itoa(soakPerGroup),
		"--base-port", strconv.Itoa(g.base), "--interval", soakSimInterval.String(),
		"--seed", strconv.Itoa(g.first*100+g.runs), "--log-level", "warn")
	// The fleet binds every listener before it serves: its last device
	// answering means all do.
	url := fmt.Sprintf("coap://127.0.0.1:%d/battery", g.base+soakPerGroup-1)
	testkit.Eventually(t, 30*time.Second, "sim fleet answering", func() bool {
		select {
		case <-g.p.done:
			t.Fatalf("sim exited: %v\n%s", g.p.err, g.p.out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		resp, err := s.probe.Get(ctx, url)
		return err == nil && resp.Code == message.Content
	})
}

// freeUDPBlock finds n consecutive free loopback UDP ports in [lo, lo+span).
func freeUDPBlock(t *testing.T, lo, span, n int) int {
	t.Helper()
	for range 200 {
		base := lo + rand.IntN(span-n)
		var conns []net.PacketConn
		for i := range n {
			c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				break
			}
			conns = append(conns, c)
		}
		ok := len(conns) == n
		for _, c := range conns {
			c.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("no %d free consecutive UDP ports in %d..%d", n, lo, lo+span)
	return 0
}

// rules is the rule file: the 1,000 devices, an observe rule on their
// temperature, LED commands, pushes, resource rules, and with gen > 0 one
// more ingress rule named after the reload.
func (s *soak) rules(gen int) string {
	var b strings.Builder
	var names []string
	for _, g := range s.sims {
		for i := range soakPerGroup {
			fmt.Fprintf(&b, "[[device]]\nname = \"sim-%d\"\nurl  = \"coap://127.0.0.1:%d\"\n\n", g.first+i, g.base+i)
			names = append(names, strconv.Quote(fmt.Sprintf("sim-%d", g.first+i)))
		}
	}
	fmt.Fprintf(&b, `[[observe]]
name    = "temperature"
devices = [%s]
paths   = ["/sensors/temp"]
topic   = "demo/{device}/{path...}"
qos     = 1

[[command]]
name           = "led"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
timeout        = "10s"
qos            = 1

[[ingress]]
name    = "telemetry"
path    = "/telemetry/{device}/{metric}"
methods = ["POST", "PUT"]
topic   = "sensors/{device}/{metric}"
qos     = 1

[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"
`, strings.Join(names, ", "))
	if gen > 0 {
		fmt.Fprintf(&b, "\n[[ingress]]\nname  = \"reload-%d\"\npath  = \"/reload/%d\"\ntopic = \"reload/%d\"\n", gen, gen, gen)
	}
	return b.String()
}

func (s *soak) setUp() {
	t := s.t
	// Persistence keeps the sessions (the bridge's commands, the test's
	// subscriptions) across the restart; the broker queues without limit.
	probe, err := coapside.NewClient(coapside.ClientOptions{LocalAddr: "127.0.0.2:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { probe.Close() })
	s.probe = probe
	s.broker = peer.StartMosquitto(t, 0, "allow_anonymous true\npersistence true\nmax_queued_messages 0\nmax_inflight_messages 0\n")
	for g := range soakGroups {
		sim := &soakSim{first: g * soakPerGroup, base: freeUDPBlock(t, 10000+g*2000, 2000, soakPerGroup)}
		s.startSim(sim)
		s.sims = append(s.sims, sim)
	}
	s.devices.init(soakGroups * soakPerGroup)
	s.commands.pending = map[int]time.Time{}
	s.commands.statuses = map[string]int{}

	s.sub = s.mqtt("soak-sub", s.onMessage, func(c paho.Client) {
		c.SubscribeMultiple(map[string]byte{"sensors/#": 1, "demo/#": 1, "replies/#": 1}, s.onMessage)
	})
	s.pub = s.mqtt("soak-pub", nil, nil)
	for k := range soakObserved {
		s.publish(fmt.Sprintf("config/soak-%d", k), "v0", true)
	}
	s.pending.Wait()

	s.bridge = startBridgeBin(t, bridgeSetup{rules: s.rules(0), broker: s.broker.URL(), env: []string{
		"BRIDGE_LOG_LEVEL=info",
		"BRIDGE_COAP_RATE_LIMIT=" + strconv.Itoa(soakRateLimit),
		"BRIDGE_MQTT_BUFFER_SIZE=20000",
	}})
	testkit.Eventually(t, 2*time.Minute, "every device observed and published", func() bool {
		return s.devices.heard() == soakGroups*soakPerGroup
	})
	for i := range soakPushClients {
		ip := net.IPv4(127, 0, 0, byte(10+i%soakPushIPs))
		c, err := coapside.NewClient(coapside.ClientOptions{LocalAddr: net.JoinHostPort(ip.String(), "0")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s.pushers = append(s.pushers, &soakPusher{id: i, c: c, url: s.bridge.coapURL(fmt.Sprintf("/telemetry/soak-%d/t", i))})
	}
	// The config values reach the bridge over MQTT; until then it answers
	// 4.04.
	for k := range soakObserved {
		ip := net.IPv4(127, 0, 0, byte(3+k%soakObserverSock))
		if k < soakObserverSock {
			c, err := coapside.NewClient(coapside.ClientOptions{LocalAddr: net.JoinHostPort(ip.String(), "0")})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			s.watchers = append(s.watchers, &soakWatcher{c: c})
		}
		w := s.watchers[k%soakObserverSock]
		tp := &soakTopic{name: fmt.Sprintf("config/soak-%d", k), url: s.bridge.coapURL(fmt.Sprintf("/config/soak-%d", k))}
		w.topics = append(w.topics, tp)
		testkit.Eventually(t, 20*time.Second, tp.name+" held by the bridge", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := w.c.Get(ctx, tp.url)
			return err == nil && resp.Code == message.Content
		})
	}
	t.Logf("set up: mosquitto on %d, bridge pid %d, %d sim processes, %d devices observed", s.broker.Port, s.bridge.cmd.Process.Pid, len(s.sims), s.devices.heard())
}

// mqtt connects a paho client with a persistent session that reconnects
// by itself; onConnect runs at every connection, and handler gets what the
// session delivers before onConnect has subscribed again.
func (s *soak) mqtt(name string, handler paho.MessageHandler, onConnect func(paho.Client)) paho.Client {
	t := s.t
	opts := paho.NewClientOptions().AddBroker(s.broker.URL()).
		SetClientID(fmt.Sprintf("%s-%d", name, time.Now().UnixNano())).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetMaxReconnectInterval(time.Second).SetKeepAlive(10 * time.Second).
		SetDefaultPublishHandler(handler)
	ready := make(chan struct{}, 1)
	opts.SetOnConnectHandler(func(c paho.Client) {
		if onConnect != nil {
			onConnect(c)
		}
		select {
		case ready <- struct{}{}:
		default:
		}
	})
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", name, tok.Error())
	}
	<-ready
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// publish sends a QoS 1 message in the background, as a well-behaved
// publisher does: again after a failure, an error after five.
func (s *soak) publish(topic, payload string, retain bool) {
	s.pending.Add(1)
	go func() {
		defer s.pending.Done()
		for try := 1; ; try++ {
			tok := s.pub.Publish(topic, 1, retain, payload)
			if tok.WaitTimeout(30*time.Second) && tok.Error() == nil {
				return
			}
			if try == 5 {
				s.fail("mqtt publish", "%s: %v", topic, tok.Error())
				return
			}
			s.pubRetries.Add(1)
			time.Sleep(time.Second) // the publisher's back-off
		}
	}()
}

// onMessage is the subscriber's handler (paho's goroutine).
func (s *soak) onMessage(_ paho.Client, m paho.Message) {
	topic, body := m.Topic(), string(m.Payload())
	levels := strings.Split(topic, "/")
	switch {
	case len(levels) == 3 && levels[0] == "sensors" && strings.HasPrefix(levels[1], "soak-"):
		i, err1 := strconv.Atoi(strings.TrimPrefix(levels[1], "soak-"))
		seq, err2 := strconv.Atoi(body)
		if err1 != nil || err2 != nil || i >= len(s.pushers) {
			s.fail("push published wrong", "%s %q", topic, body)
			return
		}
		if s.pushers[i].published(seq) > 1 {
			s.pushDuplicates.Add(1)
		}
	case len(levels) == 4 && levels[0] == "demo":
		i, err := strconv.Atoi(strings.TrimPrefix(levels[1], "sim-"))
		if err == nil {
			s.devices.saw(i, time.Now(), s)
		}
	case len(levels) == 4 && levels[0] == "replies":
		i, err := strconv.Atoi(strings.TrimPrefix(levels[1], "sim-"))
		var r struct{ Status, Error string }
		if err != nil || json.Unmarshal(m.Payload(), &r) != nil {
			s.fail("command result unreadable", "%s %q", topic, body)
			return
		}
		s.commandResult(i, r.Status, r.Error)
	}
}

// soakDevices tracks the notifications published for each observed device.
type soakDevices struct {
	mu     sync.Mutex
	last   []time.Time
	maxGap time.Duration
	notes  int64
}

func (d *soakDevices) init(n int) { d.last = make([]time.Time, n) }

func (d *soakDevices) saw(i int, now time.Time, s *soak) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i < 0 || i >= len(d.last) {
		return
	}
	d.notes++
	if prev := d.last[i]; !prev.IsZero() && s.beginNs.Load() != 0 && prev.UnixNano() > s.beginNs.Load() {
		gap := now.Sub(prev)
		d.maxGap = max(d.maxGap, gap)
		if gap > soakGapLimit {
			s.fail("device notifications paused", "sim-%d: %v without a notification", i, gap.Round(time.Second))
		}
	}
	d.last[i] = now
}

func (d *soakDevices) heard() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, l := range d.last {
		if !l.IsZero() {
			n++
		}
	}
	return n
}

// openGaps counts the devices silent for longer than soakGapLimit now.
func (d *soakDevices) openGaps(now time.Time) (n int, example string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, l := range d.last {
		if now.Sub(l) > soakGapLimit {
			n++
			example = fmt.Sprintf("sim-%d silent for %v", i, now.Sub(l).Round(time.Second))
		}
	}
	return n, example
}

// soakPusher is one well-behaved device pushing numbered readings.
type soakPusher struct {
	id  int
	c   *coapside.Client
	url string

	mu        sync.Mutex
	next      int
	accepted  []bool  // by number: answered 2.04
	publishes []uint8 // by number: times seen on MQTT
	inflight  atomic.Int32
}

func (p *soakPusher) take() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.next
	p.next++
	p.accepted = append(p.accepted, false)
	return n
}

func (p *soakPusher) accept(n int) {
	p.mu.Lock()
	p.accepted[n] = true
	p.mu.Unlock()
}

// published counts a publish of number n and returns how often it was seen.
func (p *soakPusher) published(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.publishes) <= n {
		p.publishes = append(p.publishes, 0)
	}
	if p.publishes[n] < 255 {
		p.publishes[n]++
	}
	return int(p.publishes[n])
}

// missing returns the numbers answered 2.04 and not published (yet).
func (p *soakPusher) missing() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m []int
	for n, ok := range p.accepted {
		if ok && (n >= len(p.publishes) || p.publishes[n] == 0) {
			m = append(m, n)
		}
	}
	return m
}

// push sends reading n as a CON POST until it is answered 2.04; 5.03 and
// 4.29 are retried after their Max-Age. It runs on its own goroutine.
func (s *soak) push(p *soakPusher, n int) {
	payload := []byte(strconv.Itoa(n))
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		resp, err := p.c.Post(ctx, p.url, message.TextPlain, payload)
		cancel()
		switch {
		case err != nil:
			s.fail("push failed", "soak-%d #%d: %v", p.id, n, err)
			return
		case resp.Code == message.Changed:
			p.accept(n)
			return
		case (resp.Code == message.ServiceUnavailable || resp.Code == message.TooManyRequests) && try < soakPushTries:
			s.pushRetries.Add(1)
			wait := time.Duration(resp.Options.MaxAge()) * time.Second
			time.Sleep(min(max(wait, 200*time.Millisecond), 10*time.Second)) // as Max-Age asks
		default:
			s.fail("push refused", "soak-%d #%d: %v after %d tries", p.id, n, resp.Code, try)
			return
		}
	}
}

// generate pushes at rate per second from p until the load stops; a push
// that would exceed soakPushPending under way is skipped and counted.
func (s *soak) generate(p *soakPusher, rate float64) {
	defer s.load.Done()
	begin := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for sent := 0; ; {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		for due := int(rate * time.Since(begin).Seconds()); sent < due; sent++ {
			if p.inflight.Load() >= soakPushPending {
				s.pushSkipped.Add(1)
				continue
			}
			p.inflight.Add(1)
			n := p.take()
			s.pending.Add(1)
			go func() {
				defer s.pending.Done()
				defer p.inflight.Add(-1)
				s.push(p, n)
			}()
		}
	}
}

// measurePeak finds the ingress peak with closed-loop pushers (each sends
// its next reading when the last is answered) at three concurrencies, and
// sets the soak's rate to half of the best.
func (s *soak) measurePeak() {
	t := s.t
	for _, stage := range []struct{ clients, each int }{{16, 1}, {64, 1}, {256, 1}} {
		var answered, failed atomic.Int64
		begin := time.Now()
		end := begin.Add(5 * time.Second)
		var wg sync.WaitGroup
		for i := range stage.clients {
			p := s.pushers[i]
			url := s.bridge.coapURL(fmt.Sprintf("/telemetry/peak-%d/t", i))
			for range stage.each {
				wg.Go(func() {
					for time.Now().Before(end) {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						resp, err := p.c.Post(ctx, url, message.TextPlain, []byte("1"))
						cancel()
						if err == nil && resp.Code == message.Changed {
							answered.Add(1)
						} else {
							failed.Add(1)
						}
					}
				})
			}
		}
		wg.Wait()
		rate := float64(answered.Load()) / time.Since(begin).Seconds()
		t.Logf("peak ramp: %d devices × %d under way: %.0f pushes/s answered 2.04 (%d not)", stage.clients, stage.each, rate, failed.Load())
		s.peak = max(s.peak, rate)
	}
	s.rate = s.peak / 2
	t.Logf("ingress peak %.0f pushes/s; soak load %.0f pushes/s (half) from %d devices", s.peak, s.rate, len(s.pushers))
}

// soakCommands tracks the LED commands: one at a time per device.
type soakCommands struct {
	mu                    sync.Mutex
	pending               map[int]time.Time // device -> sent at
	sent, results, extras int
	statuses              map[string]int
}

func (s *soak) sendCommand(rng *rand.Rand, n int) {
	c := &s.commands
	c.mu.Lock()
	dev := -1
	for range 10 {
		i := rng.IntN(soakGroups * soakPerGroup)
		if _, busy := c.pending[i]; !busy {
			dev = i
			break
		}
	}
	if dev >= 0 {
		c.pending[dev] = time.Now()
		c.sent++
	}
	c.mu.Unlock()
	if dev >= 0 {
		s.publish(fmt.Sprintf("cmd/sim-%d/actuators/led", dev), [2]string{"on", "off"}[n%2], false)
	}
}

// commandResult records a result. A timeout is expected from a device
// whose sim process was restarted while the command was under way; a
// queued result announces the outcome of a command for a device that is
// offline.
func (s *soak) commandResult(dev int, status, errText string) {
	c := &s.commands
	c.mu.Lock()
	if status == "queued" { // the device is offline: its outcome follows
		c.statuses[status]++
		c.mu.Unlock()
		return
	}
	sentAt, ok := c.pending[dev]
	delete(c.pending, dev)
	c.results++
	if !ok {
		c.extras++ // a redelivered command's second result (at least once)
		s.t.Logf("a second result for sim-%d: %s", dev, status)
	}
	c.statuses[status]++
	c.mu.Unlock()
	if !ok || status == "ok" {
		return
	}
	if status == "timeout" && dev/soakPerGroup < len(s.sims) {
		if r := time.Unix(0, s.sims[dev/soakPerGroup].rebootedAt.Load()); r.After(sentAt.Add(-15 * time.Second)) {
			return
		}
	}
	s.fail("command failed", "sim-%d: %s %s", dev, status, errText)
}

// soakWatcher is a CoAP client observing resource-rule topics.
type soakWatcher struct {
	c      *coapside.Client
	topics []*soakTopic
}

// soakTopic is one observed resource and what its observer saw.
type soakTopic struct {
	name, url string

	mu     sync.Mutex
	last   string
	lastAt time.Time
	maxGap time.Duration
	notes  int
	ends   int
}

func (tp *soakTopic) note(n coapside.Notification) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	now := time.Now()
	if !tp.lastAt.IsZero() {
		tp.maxGap = max(tp.maxGap, now.Sub(tp.lastAt))
	}
	tp.last, tp.lastAt = string(n.Payload), now
	tp.notes++
}

// watch observes tp until the load stops, observing again when an
// observation ends (an error) or cannot be set up yet.
func (s *soak) watch(ctx context.Context, c *coapside.Client, tp *soakTopic) {
	defer s.watching.Done()
	for ctx.Err() == nil {
		o, err := c.Observe(ctx, tp.url, tp.note)
		if err != nil {
			if ctx.Err() == nil {
				s.fail("resource observe refused", "%s: %v", tp.name, err)
				time.Sleep(time.Second)
			}
			continue
		}
		select {
		case <-o.Done():
			if ctx.Err() == nil {
				tp.mu.Lock()
				tp.ends++
				tp.mu.Unlock()
				s.fail("resource observation ended", "%s: %v", tp.name, o.Err())
			}
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = o.Cancel(cctx)
			cancel()
		}
	}
}

// soakSample is one point of the curve.
type soakSample struct {
	at         time.Duration
	rssKB      int64
	goroutines int
	fds        int
	heapKB     int64
	notes      int64 // device notifications published so far
	pushes     int   // pushes answered 2.04 so far
	commands   int   // command results so far
	skipped    int64 // pushes not offered so far: the device had soakPushPending queued
	events     string
}

func (s *soak) sample() {
	t := s.t
	pid := s.bridge.cmd.Process.Pid
	m, err := scrapeMetrics(s.bridge.httpPort)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	at := time.Since(s.begin).Round(time.Second)
	if s.begin.IsZero() {
		at = -soakSampleEvery // at rest before the load
	}
	smp := soakSample{
		at: at, rssKB: procRSS(t, pid), fds: procFDs(t, pid),
		goroutines: int(m["go_goroutines"]), heapKB: int64(m["go_memstats_heap_inuse_bytes"] / 1024),
	}
	s.devices.mu.Lock()
	smp.notes = s.devices.notes
	s.devices.mu.Unlock()
	for _, p := range s.pushers {
		p.mu.Lock()
		for _, ok := range p.accepted {
			if ok {
				smp.pushes++
			}
		}
		p.mu.Unlock()
	}
	s.commands.mu.Lock()
	smp.commands = s.commands.results
	s.commands.mu.Unlock()
	smp.skipped = s.pushSkipped.Load()
	s.mu.Lock()
	smp.events = strings.Join(s.events, " ")
	s.events = nil
	s.samples = append(s.samples, smp)
	s.mu.Unlock()
	t.Logf("sample %4ds: rss %6d KiB, goroutines %5d, fds %4d, heap %6d KiB, pushes %7d (%d skipped), notifications %7d, command results %5d %s",
		int(smp.at.Seconds()), smp.rssKB, smp.goroutines, smp.fds, smp.heapKB, smp.pushes, smp.skipped, smp.notes, smp.commands, smp.events)
	t.Logf("  bridge counters: %s", soakCounters(m))
	if n, ex := s.devices.openGaps(time.Now()); n > 0 {
		t.Logf("  %d devices silent past %v, e.g. %s", n, soakGapLimit, ex)
	}
}

// run is the soak proper: load for s.length, with the events on a timeline.
func (s *soak) run() {
	t := s.t
	ctx, cancel := context.WithCancel(context.Background())
	s.stopWatches = cancel
	t.Cleanup(cancel)
	// At rest, once the peak ramp's exchanges ended: the baseline the
	// bridge must come back to after the load.
	// The count has settled when five polls a second apart agree within 5.
	prev, stable := -100, 0
	for deadline := time.Now().Add(30 * time.Second); stable < 4 && time.Now().Before(deadline); {
		time.Sleep(time.Second) // polling pace
		m, err := scrapeMetrics(s.bridge.httpPort)
		if err != nil {
			t.Fatal(err)
		}
		n := int(m["go_goroutines"])
		if n-prev <= 5 && prev-n <= 5 {
			stable++
		} else {
			prev, stable = n, 0
		}
	}
	s.mu.Lock()
	s.events = append(s.events, "at rest before the load")
	s.mu.Unlock()
	s.sample()
	s.begin = time.Now()
	s.beginNs.Store(s.begin.UnixNano())
	for _, p := range s.pushers {
		s.load.Add(1)
		go s.generate(p, s.rate/float64(len(s.pushers)))
	}
	for _, w := range s.watchers {
		for _, tp := range w.topics {
			s.watching.Add(1)
			go s.watch(ctx, w.c, tp)
		}
	}
	s.sample()

	restartAt := s.length * 2 / 5
	floodAt := s.length * 7 / 10
	restarted, flooded := false, false
	nextSample := soakSampleEvery
	nextReload := soakReloadEvery
	nextReboot := soakRebootEvery / 2
	nextConfig := time.Second
	rng := rand.New(rand.NewPCG(1, 2))
	tick := time.NewTicker(soakCommandEvery)
	defer tick.Stop()
	for n := 0; ; n++ {
		<-tick.C
		now := time.Since(s.begin)
		if now >= s.length {
			break
		}
		s.sendCommand(rng, n)
		switch {
		case now >= nextConfig:
			nextConfig += time.Second
			for k := range soakObserved {
				s.publish(fmt.Sprintf("config/soak-%d", k), fmt.Sprintf("v%d", int(now.Seconds())), true)
			}
		case now >= nextSample:
			nextSample += soakSampleEvery
			s.sample()
		case now >= nextReload:
			nextReload += soakReloadEvery
			s.reload()
		case now >= nextReboot:
			nextReboot += soakRebootEvery
			g := s.sims[(int(now/soakRebootEvery))%len(s.sims)]
			_ = g.p.cmd.Process.Kill()
			<-g.p.done
			g.rebootedAt.Store(time.Now().UnixNano())
			s.startSim(g)
			s.event("reboot sim-%d..%d", g.first, g.first+soakPerGroup-1)
		case !restarted && now >= restartAt:
			restarted = true
			s.broker.Stop()
			s.event("broker stopped")
			time.Sleep(soakOutage) // the outage's length
			s.broker.Restart()
			s.event("broker restarted")
		case !flooded && now >= floodAt:
			flooded = true
			before, err := scrapeMetrics(s.bridge.httpPort)
			if err != nil {
				t.Fatal(err)
			}
			// From an address of its own: the flooder is blocked
			// (coap.rate_block) and must take nobody else with it.
			f := peer.Flood{Type: message.NonConfirmable, Path: []string{"telemetry", "flood", "x"}, Length: soakFloodLength, From: net.IPv4(127, 0, 0, 250)}
			s.floodSent = f.Run(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: s.bridge.coapPort})
			after, err := scrapeMetrics(s.bridge.httpPort)
			if err != nil {
				t.Fatal(err)
			}
			s.floodLimited = after["bridge_coap_rate_limited_total"] - before["bridge_coap_rate_limited_total"]
			s.event("flood of %d NON from 127.0.0.250 (%.0f rate limited)", s.floodSent, s.floodLimited)
		}
	}
	s.sample() // the last point under load
	close(s.stop)
	s.load.Wait()
}

// reload rewrites the rule file with a new extra rule and checks that the
// bridge applied it: its reload counter rises and the new path answers.
func (s *soak) reload() {
	s.reloads++
	gen := s.reloads
	before, err := scrapeMetrics(s.bridge.httpPort)
	if err != nil {
		s.t.Fatal(err)
	}
	s.bridge.writeRules(s.t, s.rules(gen))
	s.event("reload %d", gen)
	s.pending.Add(1)
	go func() {
		defer s.pending.Done()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			m, err := scrapeMetrics(s.bridge.httpPort)
			if err == nil && m[`bridge_reloads_total{result="ok"}`] > before[`bridge_reloads_total{result="ok"}`] {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				resp, err := s.watchers[0].c.Post(ctx, s.bridge.coapURL(fmt.Sprintf("/reload/%d", gen)), message.TextPlain, []byte("x"))
				cancel()
				if err == nil && resp.Code == message.Changed {
					return
				}
			}
			time.Sleep(200 * time.Millisecond) // polling pace
		}
		s.fail("reload not applied", "reload %d not live within 20 s", gen)
	}()
}

// drain waits for what is under way and checks every ledger.
func (s *soak) drain() {
	t := s.t
	s.pending.Wait()
	deadline := time.Now().Add(time.Minute)
	missing := 0
	for {
		missing = 0
		for _, p := range s.pushers {
			missing += len(p.missing())
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range s.pushers {
		for _, n := range p.missing() {
			s.fail("push lost", "soak-%d #%d answered 2.04, never published", p.id, n)
		}
	}
	testkit.Eventually(t, soakCommandLimit, "a result for every command", func() bool {
		s.commands.mu.Lock()
		defer s.commands.mu.Unlock()
		return len(s.commands.pending) == 0
	})
	// The last value reaches every observer.
	for k := range soakObserved {
		s.publish(fmt.Sprintf("config/soak-%d", k), "final", true)
	}
	s.pending.Wait()
	testkit.Eventually(t, 30*time.Second, "the final value at every resource observer", func() bool {
		for _, w := range s.watchers {
			for _, tp := range w.topics {
				tp.mu.Lock()
				last := tp.last
				tp.mu.Unlock()
				if last != "final" {
					return false
				}
			}
		}
		return true
	})
	s.stopWatches()
	s.watching.Wait()
	if n, ex := s.devices.openGaps(time.Now()); n > 0 {
		s.fail("device notifications paused", "%d devices silent at the end, e.g. %s", n, ex)
	}
	for _, w := range s.watchers {
		for _, tp := range w.topics {
			tp.mu.Lock()
			if tp.maxGap > soakGapLimit {
				s.fail("resource notifications paused", "%s: %v", tp.name, tp.maxGap)
			}
			tp.mu.Unlock()
		}
	}
	// After the load: the bridge at rest. Goroutines of the last exchanges
	// and re-registrations end within seconds; what a leak holds stays, so
	// the resting sample is taken once the baseline is back, or after a
	// minute.
	s.event("load stopped")
	base := s.samples[0]
	settled := time.Now()
	for deadline := settled.Add(time.Minute); time.Now().Before(deadline); {
		m, err := scrapeMetrics(s.bridge.httpPort)
		if err != nil {
			t.Fatal(err)
		}
		if int(m["go_goroutines"]) <= base.goroutines+soakFlatGoroutines && procFDs(t, s.bridge.cmd.Process.Pid) <= base.fds+soakFlatFDs {
			break
		}
		time.Sleep(time.Second) // polling pace
	}
	s.restAfter = time.Since(settled).Round(time.Second)
	s.sample()
}

// report prints the curve, writes it as CSV, and judges it.
func (s *soak) report() {
	t := s.t
	path := os.Getenv(soakOutEnv)
	if path == "" {
		path = filepath.Join(os.TempDir(), fmt.Sprintf("bridge-soak-%s.csv", time.Now().Format("20060102-150405")))
	}
	var csv strings.Builder
	csv.WriteString("seconds,rss_kib,goroutines,open_fds,heap_inuse_kib,pushes_accepted,pushes_skipped,notifications,command_results,events\n")
	var table strings.Builder
	fmt.Fprintf(&table, "%6s %9s %10s %4s %9s %8s %7s %8s %8s  %s\n", "t(s)", "rss(KiB)", "goroutines", "fds", "heap(KiB)", "pushes", "skipped", "notes", "commands", "events")
	for _, m := range s.samples {
		fmt.Fprintf(&csv, "%d,%d,%d,%d,%d,%d,%d,%d,%d,%q\n", int(m.at.Seconds()), m.rssKB, m.goroutines, m.fds, m.heapKB, m.pushes, m.skipped, m.notes, m.commands, m.events)
		fmt.Fprintf(&table, "%6d %9d %10d %4d %9d %8d %7d %8d %8d  %s\n", int(m.at.Seconds()), m.rssKB, m.goroutines, m.fds, m.heapKB, m.pushes, m.skipped, m.notes, m.commands, m.events)
	}
	if err := os.WriteFile(path, []byte(csv.String()), 0o644); err != nil {
		t.Errorf("write the curve: %v", err)
	}
	t.Logf("curve (also %s):\n%s", path, table.String())

	// The loaded samples: every one but the resting ones before and after.
	loaded := s.samples[1 : len(s.samples)-1]
	verdicts, flat := flatness(loaded)
	before, after := s.samples[0], s.samples[len(s.samples)-1]
	restOK := after.goroutines <= before.goroutines+soakFlatGoroutines && after.fds <= before.fds+soakFlatFDs
	flat = flat && restOK
	verdicts = append(verdicts, fmt.Sprintf("at rest before and %v after the load: goroutines %d -> %d (limit +%d), fds %d -> %d (limit +%d), rss %d -> %d KiB: %s",
		s.restAfter, before.goroutines, after.goroutines, soakFlatGoroutines, before.fds, after.fds, soakFlatFDs, before.rssKB, after.rssKB,
		map[bool]string{true: "back to the baseline", false: "LEFT OVER"}[restOK]))
	s.commands.mu.Lock()
	cmds := fmt.Sprintf("%d commands, %d results (%v), %d extra results of redelivered commands", s.commands.sent, s.commands.results, s.commands.statuses, s.commands.extras)
	s.commands.mu.Unlock()
	sent := 0
	for _, p := range s.pushers {
		sent += p.next
	}
	achieved := float64(loaded[len(loaded)-1].pushes) / loaded[len(loaded)-1].at.Seconds()
	s.devices.mu.Lock()
	devs := fmt.Sprintf("%d device notifications published, longest pause %v", s.devices.notes, s.devices.maxGap.Round(time.Second))
	s.devices.mu.Unlock()
	var resGap time.Duration
	resNotes, resEnds := 0, 0
	for _, w := range s.watchers {
		for _, tp := range w.topics {
			tp.mu.Lock()
			resGap, resNotes, resEnds = max(resGap, tp.maxGap), resNotes+tp.notes, resEnds+tp.ends
			tp.mu.Unlock()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	errTotal := 0
	for _, n := range s.errs {
		errTotal += n
	}
	t.Logf("soak of %v: ingress peak %.0f pushes/s, load %.0f pushes/s offered, %.0f/s answered 2.04\n"+
		"  pushes: %d sent, %d retried after 5.03/4.29, %d skipped (a device with %d under way), %d published twice\n"+
		"  %s\n  %s\n  resource observers: %d notifications, longest pause %v, %d observations ended\n"+
		"  %d reloads, %d MQTT publishes retried, flood %d sent / %.0f rate limited\n"+
		"  errors among well-behaved clients: %d %v\n  flatness (median of the last third ≤ the middle third's +%.0f%% + slack):\n    %s",
		s.length, s.peak, s.rate, achieved, sent, s.pushRetries.Load(), s.pushSkipped.Load(), soakPushPending, s.pushDuplicates.Load(),
		cmds, devs, resNotes, resGap.Round(time.Second), resEnds, s.reloads, s.pubRetries.Load(), s.floodSent, s.floodLimited,
		errTotal, s.errs, soakFlatFraction*100, strings.Join(verdicts, "\n    "))
	for _, e := range s.examples {
		t.Errorf("error: %s", e)
	}
	if errTotal > len(s.examples) {
		t.Errorf("... %d errors in all", errTotal)
	}
	if !flat {
		t.Errorf("the curve is not flat")
	}
}

// flatness compares the median of the last third of the samples with the
// middle third's for RSS, goroutines and descriptors; a series is growing
// when it exceeds the middle by soakFlatFraction plus its slack. The first
// third is the warm-up. With fewer than six samples there is no verdict.
func flatness(samples []soakSample) (verdicts []string, flat bool) {
	third := len(samples) / 3
	if third < 2 {
		return []string{"too few samples for a verdict"}, true
	}
	mid, last := samples[third:2*third], samples[len(samples)-third:]
	flat = true
	check := func(name string, get func(soakSample) float64, slack float64) {
		a, b := median(mid, get), median(last, get)
		limit := a*(1+soakFlatFraction) + slack
		ok := b <= limit
		flat = flat && ok
		verdicts = append(verdicts, fmt.Sprintf("%s: middle third %.0f, last third %.0f, limit %.0f: %s", name, a, b, limit, map[bool]string{true: "flat", false: "GROWING"}[ok]))
	}
	check("rss KiB", func(m soakSample) float64 { return float64(m.rssKB) }, soakFlatRSSKB)
	check("goroutines", func(m soakSample) float64 { return float64(m.goroutines) }, soakFlatGoroutines)
	check("open fds", func(m soakSample) float64 { return float64(m.fds) }, soakFlatFDs)
	return verdicts, flat
}

// soakCounters picks the bridge's counters that explain a soak's curve.
func soakCounters(m map[string]float64) string {
	var out []string
	for _, k := range []string{
		"bridge_coap_received_total", "bridge_coap_overloaded_total", "bridge_coap_duplicates_total",
		"bridge_coap_retransmissions_total", "bridge_coap_timeouts_total", "bridge_coap_rate_limited_total",
		"bridge_observations_active", "bridge_observers_active", "bridge_command_queue_depth",
		"bridge_mqtt_withdrawn_total", "bridge_mqtt_reconnects_total", "bridge_mqtt_offline_buffer_depth",
		`bridge_reloads_total{result="ok"}`,
	} {
		out = append(out, fmt.Sprintf("%s=%.0f", strings.TrimPrefix(k, "bridge_"), m[k]))
	}
	return strings.Join(out, " ")
}

// median is the middle value of get over ms: one sample taken during a
// flood or a restart does not move it, a steady growth does.
func median(ms []soakSample, get func(soakSample) float64) float64 {
	v := make([]float64, len(ms))
	for i, m := range ms {
		v[i] = get(m)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// scrapeMetrics reads every series of the bridge's /metrics, keyed by name
// and labels as printed (bridge_reloads_total{result="ok"}).
func scrapeMetrics(port int) (map[string]float64, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		l := sc.Text()
		i := strings.LastIndexByte(l, ' ')
		if strings.HasPrefix(l, "#") || i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			out[l[:i]] = v
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return out, sc.Err()
}

// procRSS is the resident set size of pid in KiB (VmRSS).
func procRSS(t *testing.T, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// procFDs is the number of open file descriptors of pid.
func procFDs(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// TestSoakFlatness: the soak's verdict passes a flat curve with spikes (a
// flood, a restart) and fails one that keeps growing in any series.
func TestSoakFlatness(t *testing.T) {
	curve := func(grow func(i int, m *soakSample)) []soakSample {
		var ms []soakSample
		for i := range 60 { // a 10-minute soak's samples
			m := soakSample{rssKB: 60000 + int64(i%3)*500, goroutines: 1100 + i%4, fds: 15}
			if i == 30 || i == 45 || i == 50 {
				m.rssKB, m.goroutines, m.fds = 90000, 1600, 40 // an event's sample
			}
			grow(i, &m)
			ms = append(ms, m)
		}
		return ms
	}
	if v, flat := flatness(curve(func(int, *soakSample) {})); !flat {
		t.Errorf("a flat curve with spikes judged growing: %v", v)
	}
	for name, grow := range map[string]func(i int, m *soakSample){
		"rss":        func(i int, m *soakSample) { m.rssKB += int64(i) * 1024 },
		"goroutines": func(i int, m *soakSample) { m.goroutines += 8 * i },
		"fds":        func(i int, m *soakSample) { m.fds += i },
	} {
		if v, flat := flatness(curve(grow)); flat {
			t.Errorf("%s growing steadily judged flat: %v", name, v)
		}
	}
	if _, flat := flatness(curve(func(int, *soakSample) {})[:5]); !flat {
		t.Error("five samples: want no verdict, not a failure")
	}
}

// TestSoakScriptRejectsBadDuration: e2e/soak.sh refuses what is not a
// duration before it starts anything.
func TestSoakScriptRejectsBadDuration(t *testing.T) {
	bash := peer.Require(t, "bash")
	for _, d := range []string{"10", "ten", "5x", "-1m"} {
		out, code := run(t, 10*time.Second, ".", bash, "soak.sh", d)
		if code != 2 || !strings.Contains(out, "usage:") {
			t.Errorf("soak.sh %q: exit %d %q, want 2 and the usage", d, code, out)
		}
	}
}
