package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// inCluster makes a bridge instance of cluster "plant" on the broker at
// addr, with the MQTT client ID base clientID.
func inCluster(addr, clientID, instance string) func(*Config, *Options) {
	return func(c *Config, o *Options) {
		useRemoteBroker(c, addr, "")
		c.MQTT.ClientID = clientID
		c.Cluster = ClusterConfig{Name: "plant", Instance: instance}
		o.MQTTKeepAlive = 2 * time.Second
	}
}

// clusterRules lists n observable devices at addrs, observed by one rule,
// and a command rule for them.
func clusterRules(addrs []net.Addr) string {
	var b strings.Builder
	var names []string
	for i, a := range addrs {
		name := fmt.Sprintf("d%02d", i)
		names = append(names, strconv.Quote(name))
		fmt.Fprintf(&b, "[[device]]\nname = %q\nurl  = \"coap://%s\"\n\n", name, a)
	}
	fmt.Fprintf(&b, `
[[observe]]
name    = "temp"
devices = [%s]
paths   = ["/sensors/temp"]
topic   = "obs/{device}/{path...}"

[[command]]
name           = "led"
filter         = "cmd/{device}/led"
method         = "PUT"
url            = "coap://{device}/led"
response_topic = "replies/led"
`, strings.Join(names, ", "))
	return b.String()
}

// ledCounter counts the PUT /led payloads a device got.
type ledCounter struct {
	mu  sync.Mutex
	got map[string]int
}

func countLED(dev *fakeDevice) *ledCounter {
	lc := &ledCounter{got: map[string]int{}}
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) {
		lc.mu.Lock()
		lc.got[string(r.Payload)]++
		lc.mu.Unlock()
		w.SetCode(message.Changed)
	})
	return lc
}

// distinct returns how many payloads arrived, and those that arrived more
// than once.
func (lc *ledCounter) distinct() (int, []string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	var dup []string
	for p, n := range lc.got {
		if n > 1 {
			dup = append(dup, fmt.Sprintf("%s×%d", p, n))
		}
	}
	return len(lc.got), dup
}

// publishMany publishes payloads first..last-1 to topic at QoS 1 from one
// client, each acknowledged by the broker.
func publishMany(t *testing.T, broker, topic string, first, last int) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	for i := first; i < last; i++ {
		if tok := c.Publish(topic, 1, false, strconv.Itoa(i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
}

// TestClusterCommandsRunOnce: three bridges of one cluster on mosquitto
// share the commands: each of 100 QoS 1 commands reaches the device once,
// and more than one member executed some.
func TestClusterCommandsRunOnce(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n").Addr()
	dev := startDevice(t, "")
	leds := countLED(dev)
	rulesText := clusterRules([]net.Addr{dev.addr})
	var members []*testBridge
	for _, inst := range []string{"a", "b", "c"} {
		members = append(members, startBridge(t, rulesText, inCluster(broker, "cmd-"+inst, inst)))
	}
	replies := subscribe(t, broker, "replies/led", 1)
	publishMany(t, broker, "cmd/d00/led", 0, 100)
	for i := 0; i < 100; i++ {
		replies.next(t, 20*time.Second)
	}
	n, dup := leds.distinct()
	if n != 100 || len(dup) > 0 {
		t.Fatalf("device got %d distinct commands (want 100), repeated: %v", n, dup)
	}
	busy := 0
	for _, m := range members {
		if testutil.ToFloat64(m.metrics.messages.WithLabelValues("led", dirMQTTToCoAP)) > 0 {
			busy++
		}
	}
	if busy < 2 {
		t.Errorf("%d members executed commands, want the work shared", busy)
	}
}

// tcpProxy forwards TCP connections to a target until it is cut: then it
// stops forwarding without closing the connections, as a host that died
// does, and refuses new ones.
type tcpProxy struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies from src to dst, discarding once the proxy is cut.
func (p *tcpProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF && !p.cut.Load() {
				dst.Close()
			}
			return
		}
	}
}

// blackhole stops forwarding and refuses new connections.
func (p *tcpProxy) blackhole() { p.cut.Store(true) }

func (p *tcpProxy) close() {
	p.cut.Store(true)
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestClusterObservesEachDeviceOnce: three bridges of one cluster observe
// 30 devices, each by exactly one member. A member that vanishes (its
// connection goes silent, as when its host dies) has its devices observed
// by the others within the bound (1.5 × keepalive for the broker to
// publish its Last Will, then a registration), and the commands sent
// meanwhile are not lost; restarted, it takes its share back and every
// device is still observed once.
func TestClusterObservesEachDeviceOnce(t *testing.T) {
	const devices = 30
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n").Addr()
	var addrs []net.Addr
	var devs []*observableDevice
	for range devices {
		d := startObservableDevice(t, "", 60)
		devs = append(devs, d)
		addrs = append(addrs, d.addr)
	}
	leds := countLED(devs[0].fakeDevice)
	rulesText := clusterRules(addrs)
	proxy := startTCPProxy(t, broker)
	a := startBridge(t, rulesText, inCluster(broker, "obs-a", "a"))
	b := startBridge(t, rulesText, inCluster(broker, "obs-b", "b"))
	c := startBridge(t, rulesText, inCluster(proxy.addr(), "obs-c", "c"))

	observed := func(members ...*testBridge) (sum int, each []int) {
		for _, m := range members {
			n := int(testutil.ToFloat64(m.metrics.observations))
			sum += n
			each = append(each, n)
		}
		return sum, each
	}
	// onceEach waits until every device has one observer and each member
	// observes the devices rendezvous hashing gives it among members:
	// the handover is over.
	onceEach := func(what string, members ...*testBridge) {
		t.Helper()
		var names []string
		for _, m := range members {
			names = append(names, m.cfg.Cluster.Instance)
		}
		want := map[string]int{}
		for i := range devices {
			want[rendezvousOwner(fmt.Sprintf("d%02d", i), names)]++
		}
		state := func() (ok bool, got []int, multi []string) {
			ok = true
			for _, m := range members {
				n := int(testutil.ToFloat64(m.metrics.observations))
				got = append(got, n)
				ok = ok && n == want[m.cfg.Cluster.Instance]
			}
			for i, d := range devs {
				if n := d.obs.Observers("/sensors/temp"); n != 1 {
					ok = false
					multi = append(multi, fmt.Sprintf("d%02d:%d", i, n))
				}
			}
			return ok, got, multi
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok, got, multi := state()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s: members observe %v, want %v; devices without one observer: %v", what, got, want, multi)
			}
			// A notification tells a device that an observer which
			// vanished without deregistering is gone.
			for _, d := range devs {
				d.set(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	onceEach("every device observed by one member of three", a, b, c)
	_, each := observed(a, b, c)
	for i, n := range each {
		if n == 0 {
			t.Errorf("member %d observes no device (shares %v)", i, each)
		}
	}
	for _, m := range []*testBridge{a, b, c} {
		if g := testutil.ToFloat64(m.cluster.members); g != 3 {
			t.Errorf("bridge_cluster_members = %v, want 3", g)
		}
	}
	t.Logf("shares of a, b, c: %v", each)
	code, body := get(t, "http://"+a.HTTPAddr().String()+"/readyz")
	if wantBody := fmt.Sprintf("ready\ncluster plant: instance a, 3 members (a,b,c), %d devices owned\n", each[0]); code != 200 || body != wantBody {
		t.Errorf("/readyz = %d %q, want 200 %q", code, body, wantBody)
	}
	// The status page's API shows the same membership.
	_, body = get(t, "http://"+a.HTTPAddr().String()+"/api/status")
	var st ConsoleStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/api/status: %v: %s", err, body)
	}
	if cl := st.Cluster; cl == nil || cl.Name != "plant" || cl.Instance != "a" || !cl.Joined ||
		strings.Join(cl.Members, ",") != "a,b,c" || cl.OwnedDevices != each[0] {
		t.Errorf("/api/status cluster = %+v, want plant/a joined with a,b,c owning %d", cl, each[0])
	}
	_, body = get(t, "http://"+a.HTTPAddr().String()+"/metrics")
	for _, line := range []string{"bridge_cluster_members 3", fmt.Sprintf("bridge_cluster_owned_devices %d", each[0])} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}

	// c's host dies: its connection goes silent.
	killed := time.Now()
	proxy.blackhole()
	// Commands sent meanwhile are not lost, those the broker handed to c
	// included: they wait in c's session until it comes back.
	publishMany(t, broker, "cmd/d00/led", 0, 30)
	testkit.Eventually(t, 30*time.Second, "the others observe every device", func() bool {
		sum, _ := observed(a, b)
		return sum == devices
	})
	took := time.Since(killed)
	t.Logf("devices observed again %v after the member vanished (keepalive 2s)", took.Round(time.Millisecond))
	// Bound: the Last Will within 1.5 × keepalive, then a registration;
	// generous on a shared machine.
	if took > 10*time.Second {
		t.Errorf("devices taken over after %v, want within the keepalive bound", took)
	}
	c.stop(t) // what was c's process ends; its observations end with it
	onceEach("every device observed by one member of two", a, b)

	// c comes back with its session.
	c = startBridge(t, rulesText, inCluster(broker, "obs-c", "c"))
	onceEach("every device observed by one member of three again", a, b, c)
	if n := testutil.ToFloat64(c.metrics.observations); n == 0 {
		t.Error("the restarted member took no device back")
	}
	testkit.Eventually(t, 20*time.Second, "every command sent during the outage executed", func() bool {
		n, _ := leds.distinct()
		return n == 30
	})
	if n, dup := leds.distinct(); n != 30 || len(dup) > 0 {
		t.Fatalf("device got %d distinct commands (want 30), repeated: %v", n, dup)
	}
	t.Logf("commands executed by a, b and c restarted: %v %v %v",
		testutil.ToFloat64(a.metrics.messages.WithLabelValues("led", dirMQTTToCoAP)),
		testutil.ToFloat64(b.metrics.messages.WithLabelValues("led", dirMQTTToCoAP)),
		testutil.ToFloat64(c.metrics.messages.WithLabelValues("led", dirMQTTToCoAP)))
}

// TestValidateCluster: a cluster needs a remote broker and status topics,
// and names that are one topic level each; the instance defaults to the
// host name.
func TestValidateCluster(t *testing.T) {
	remote := func(c *Config) { c.MQTT.Broker = "tcp://127.0.0.1:1883" }
	tests := []struct {
		name string
		mod  func(*Config)
		want []string
	}{
		{"alone", func(*Config) {}, nil},
		{"cluster", func(c *Config) { remote(c); c.Cluster = ClusterConfig{Name: "plant", Instance: "a"} }, nil},
		{"embedded broker", func(c *Config) { c.Cluster = ClusterConfig{Name: "plant", Instance: "a"} }, []string{
			"cluster.name: a cluster needs a remote broker"}},
		{"wildcards", func(c *Config) { remote(c); c.Cluster = ClusterConfig{Name: "pl+nt", Instance: "a/b"} }, []string{
			`cluster.name: "pl+nt" must be one MQTT topic level`, `cluster.instance: "a/b" must be one MQTT topic level`}},
		{"reserved instance", func(c *Config) { remote(c); c.Cluster = ClusterConfig{Name: "plant", Instance: "learned"} }, []string{
			`cluster.instance: "learned" names the cluster's directory`}},
		{"no status topic", func(c *Config) {
			remote(c)
			c.MQTT.StatusTopic = "-"
			c.Cluster = ClusterConfig{Name: "plant", Instance: "a"}
		}, []string{`mqtt.status_topic: must not be "-" in a cluster`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			tt.mod(&c)
			err := c.Validate()
			var ces ConfigErrors
			errors.As(err, &ces)
			if len(ces) != len(tt.want) {
				t.Fatalf("got %v, want %d errors", err, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(ces[i].Error(), w) {
					t.Errorf("error %d = %q, want it to contain %q", i, ces[i].Error(), w)
				}
			}
		})
	}
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	c := Defaults()
	c.Cluster.Name = "plant"
	c.SetDefaults()
	if c.Cluster.Instance != host {
		t.Errorf("instance = %q, want the host name %q", c.Cluster.Instance, host)
	}
}

// TestRendezvousMovesOnlyTheLeaversDevices: owners spread over the
// members, and when one leaves only its devices change owner.
func TestRendezvousMovesOnlyTheLeaversDevices(t *testing.T) {
	three, two := []string{"a", "b", "c"}, []string{"a", "b"}
	count := map[string]int{}
	for i := range 3000 {
		d := fmt.Sprintf("dev-%d", i)
		before, after := rendezvousOwner(d, three), rendezvousOwner(d, two)
		count[before]++
		if before != "c" && before != after {
			t.Fatalf("%s moved from %s to %s when c left", d, before, after)
		}
	}
	for _, m := range three {
		if count[m] < 800 {
			t.Errorf("member %s owns %d of 3000 devices: %v", m, count[m], count)
		}
	}
}

func TestFiltersOverlap(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"cmd/+/led", "cmd/d1/led", true},
		{"cmd/+/led", "cmd/+/fan", false},
		{"cmd/#", "cmd", true},
		{"cmd/+", "cmd/a/b", false},
		{"config/+", "cmd/+/led", false},
		{"+/+/led", "cmd/#", true},
		{"a", "a/b", false},
	} {
		if got := filtersOverlap(tt.a, tt.b); got != tt.want {
			t.Errorf("filtersOverlap(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := filtersOverlap(tt.b, tt.a); got != tt.want {
			t.Errorf("filtersOverlap(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}

// TestCheckRefusesCommandOverlappingResourceInCluster: in a cluster a
// command filter that overlaps a resource rule's topic is refused with its
// line, since every member would run those commands; alone it is fine.
func TestCheckRefusesCommandOverlappingResourceInCluster(t *testing.T) {
	cfg, _ := ruleFileConfig(t, `
[[resource]]
name  = "state"
path  = "/state/{device}/{what...}"
topic = "things/{device}/{what...}"

[[command]]
name   = "led"
filter = "things/{device}/led"
method = "PUT"
url    = "coap://{device}/led"
`)
	cfg.MQTT.Broker = "tcp://127.0.0.1:1883"
	if _, err := Check(cfg); err != nil {
		t.Fatalf("alone: %v", err)
	}
	cfg.Cluster = ClusterConfig{Name: "plant", Instance: "a"}
	_, err := Check(cfg)
	want := `rules.toml:7: [[command]] "led": filter "things/+/led" overlaps [[resource]] "state" ("things/+/#")`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("in a cluster: %v, want %q", err, want)
	}
}

// TestClusterLearnedDeviceObservedByItsLearner: a device without url is
// reached where it last spoke from, which only the member it pushed to
// knows: that member observes it, even when rendezvous hashing gives its
// name to another member.
func TestClusterLearnedDeviceObservedByItsLearner(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n").Addr()
	name := ""
	for i := 0; name == ""; i++ {
		if n := fmt.Sprintf("dev-%d", i); rendezvousOwner(n, []string{"a", "b"}) == "a" {
			name = n
		}
	}
	rulesText := learnedRules + `
[[observe]]
name    = "every"
devices = ["*"]
paths   = ["/temp"]
topic   = "temp/{device}"
`
	a := startBridge(t, rulesText, inCluster(broker, "learn-a", "a"))
	b := startBridge(t, rulesText, inCluster(broker, "learn-b", "b"))
	testkit.Eventually(t, 10*time.Second, "two members", func() bool {
		return testutil.ToFloat64(a.cluster.members) == 2 && testutil.ToFloat64(b.cluster.members) == 2
	})
	nat := peer.StartNAT(t, b.CoAPAddr().(*net.UDPAddr), 0)
	dev := startNATDevice(t, nat)
	obs := runObserveServer(t)
	dev.mux.Handle("GET /temp", obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte("20"))
	})))
	temps := subscribe(t, broker, "temp/#", 1)
	dev.pushUp(t, name, "hello")
	temps.waitFor(t, 10*time.Second, "temp/"+name, "20")
	testkit.Eventually(t, 10*time.Second, "observed by the member it pushed to", func() bool {
		return obs.Observers("/temp") == 1 && testutil.ToFloat64(b.metrics.observations) == 1
	})
	if n := testutil.ToFloat64(a.metrics.observations); n != 0 {
		t.Errorf("the member that owns the name but never heard from the device observes %v", n)
	}
}

// TestClusterCommandForwardedToLearner: a command for a learned device
// that the broker hands to a member which never heard from the device is
// passed on to the member that learned it: every command reaches the
// device once, whichever member took it.
func TestClusterCommandForwardedToLearner(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n").Addr()
	a := startBridge(t, learnedRules, inCluster(broker, "fwd-a", "a"))
	b := startBridge(t, learnedRules, inCluster(broker, "fwd-b", "b"))
	nat := peer.StartNAT(t, b.CoAPAddr().(*net.UDPAddr), 0)
	dev := startNATDevice(t, nat)
	dev.pushUp(t, "dev-f", "hello")
	testkit.Eventually(t, 10*time.Second, "a knows that b learned the device", func() bool {
		return a.cluster.learner("dev-f") == "b"
	})
	replies := subscribe(t, broker, "replies/#", 1)
	const n = 20
	publishMany(t, broker, "cmd/dev-f/led", 0, n)
	for i := 0; i < n; i++ {
		r := decodeResult(t, replies.next(t, 20*time.Second).Payload())
		if r.Status != "ok" {
			t.Fatalf("command result %+v", r)
		}
	}
	got := map[string]int{}
	dev.mu.Lock()
	for _, r := range dev.requests {
		if r.path == "/led" {
			got[r.payload]++
		}
	}
	dev.mu.Unlock()
	if len(got) != n {
		t.Errorf("device got %d distinct commands, want %d: %v", len(got), n, got)
	}
	for p, k := range got {
		if k != 1 {
			t.Errorf("command %s reached the device %d times", p, k)
		}
	}
	if f := testutil.ToFloat64(a.cluster.forwarded); f == 0 {
		t.Error("a forwarded no command: the broker gave it none, the test proves nothing")
	}
	t.Logf("a forwarded %v of %d commands to b", testutil.ToFloat64(a.cluster.forwarded), n)
}
