package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// freeUDPRange finds n consecutive free UDP ports on 127.0.0.1.
func freeUDPRange(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 100; try++ {
		base := 20000 + rand.IntN(30000)
		var conns []net.PacketConn
		ok := true
		for i := 0; i < n; i++ {
			c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				ok = false
				break
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free UDP port range")
	return 0
}

// startDemo runs mosquitto, `bridge sim` with three devices and the bridge
// in remote-broker mode on rules/demo.toml (its device ports moved to free
// ones, from base on), and a subscriber to everything; extra is appended
// to the bridge's config.toml.
func startDemo(t *testing.T, extra string) (brokerPort, base int, b *bridgeProc, sub *mqttSub) {
	t.Helper()
	brokerPort = startMosquitto(t)
	base = freeUDPRange(t, 3)
	demo, err := os.ReadFile("../rules/demo.toml")
	if err != nil {
		t.Fatal(err)
	}
	rules := string(demo)
	for i := 0; i < 3; i++ {
		from := fmt.Sprintf("127.0.0.1:%d", 5690+i)
		if !strings.Contains(rules, from) {
			t.Fatalf("rules/demo.toml no longer has device %s", from)
		}
		rules = strings.ReplaceAll(rules, from, fmt.Sprintf("127.0.0.1:%d", base+i))
	}
	start(t, ".", nil, bridgeBin(t), "sim", "--devices", "3", "--base-port", strconv.Itoa(base), "--listen-host", "127.0.0.1", "--interval", "500ms", "--seed", "7")
	b = startBridgeBin(t, bridgeSetup{rules: rules, broker: fmt.Sprintf("tcp://127.0.0.1:%d", brokerPort), extra: extra})
	sub = startSub(t, brokerPort, "#")
	return brokerPort, base, b, sub
}

// TestE2EDemoTopology runs what docker-compose.yml runs, as local
// processes: mosquitto, `bridge sim` with three devices and the bridge in
// remote-broker mode on rules/demo.toml (its device ports moved to free
// ones), and checks the demo's flows.
func TestE2EDemoTopology(t *testing.T) {
	brokerPort, base, b, sub := startDemo(t, "")

	// Observations of every device's climate resources, as JSON numbers.
	for i := 0; i < 3; i++ {
		sub.waitLine(t, 20*time.Second, fmt.Sprintf("demo/sim-%d/sensors/temp ", i))
		sub.waitLine(t, 20*time.Second, fmt.Sprintf("demo/sim-%d/sensors/humidity ", i))
	}
	// The battery poll.
	sub.waitLine(t, 30*time.Second, "demo/sim-0/battery ")
	// A command switches sim-1's LED; the device's answer comes back.
	mqttPub(t, brokerPort, "cmd/sim-1/actuators/led", "on", "-q", "1")
	sub.waitLine(t, 15*time.Second, "replies/sim-1/actuators/led", `"status":"ok"`, `"code":"2.04"`)
	out, code := run(t, 20*time.Second, ".", bridgeBin(t), "coap", "get", fmt.Sprintf("coap://127.0.0.1:%d/actuators/led", base+1))
	if code != 0 || !strings.Contains(out, "on") {
		t.Fatalf("LED state after the command: exit %d %q", code, out)
	}
	// A bad LED value: the device says 4.00 and the reply says so.
	mqttPub(t, brokerPort, "cmd/sim-1/actuators/led", "purple", "-q", "1")
	sub.waitLine(t, 15*time.Second, "replies/sim-1/actuators/led", `"code":"4.00"`)
	// A push through the bridge's CoAP server.
	out, code = run(t, 20*time.Second, ".", bridgeBin(t), "coap", "post", "-t", "text", "-p", "3.3", b.coapURL("/telemetry/sim-2/voltage"))
	if code != 0 {
		t.Fatalf("bridge coap post: exit %d %q", code, out)
	}
	sub.waitLine(t, 10*time.Second, "sensors/sim-2/voltage 3.3")
	// The bridge stops cleanly.
	if code := b.stop(t, 5*time.Second); code != 0 {
		t.Fatalf("bridge exit code %d", code)
	}
}

// TestE2EDemoSleepyDevice runs the demo's pushing, sleepy device
// (sleepy-0: `bridge sim --push ... --sleep ...` as in docker-compose.yml)
// beside the demo topology and commands it through MQTT while it sleeps:
// the command is announced queued at once (queue mode), its ok result
// arrives after the device's next wake and the device carries it out once.
// As in docker-compose.yml, the bridge's devices.awake matches the
// device's awake window (a little shorter: the window opens at the
// device's first push of a wake).
func TestE2EDemoSleepyDevice(t *testing.T) {
	const sleep, awake = 4 * time.Second, time.Second
	const ruleTimeout = 10 * time.Second // the actuators command rule in rules/demo.toml
	brokerPort, _, b, sub := startDemo(t, awakeConfig(awake))
	port := freeUDPRange(t, 1)
	sim := start(t, ".", nil, bridgeBin(t), "sim", "--devices", "1", "--name-prefix", "sleepy-",
		"--base-port", strconv.Itoa(port), "--listen-host", "127.0.0.1", "--seed", "9",
		"--push", b.coapURL("/telemetry/{device}/{metric}"), "--sleep", sleep.String(), "--awake", awake.String())

	// Its pushes reach MQTT through the demo's telemetry ingress, which
	// also makes the bridge learn where it speaks from.
	for _, m := range []string{"temp", "humidity", "battery"} {
		sub.waitLine(t, 20*time.Second, "sensors/sleepy-0/"+m+" ")
	}
	// Right after an awake window closes the device sleeps for
	// sleep-awake: the command is published then.
	asleep := func() int { return strings.Count(sim.out.String(), `msg="sim device asleep"`) }
	n := asleep()
	testkit.Eventually(t, 2*sleep, "sleepy-0 asleep", func() bool { return asleep() > n })
	wakes := strings.Count(sim.out.String(), `msg="sim device awake"`)
	var published time.Time
	bound := ruleTimeout + 4*sleep
	awaitQueuedThenOK(t, sub, "replies/sleepy-0/actuators/led", bound+10*time.Second, func() {
		published = time.Now()
		mqttPub(t, brokerPort, "cmd/sleepy-0/actuators/led", "on", "-q", "1")
	})
	if d := time.Since(published); d > bound {
		t.Errorf("ok result %v after the command, want within %v", d, bound)
	} else {
		t.Logf("ok result %v after the command", d.Round(time.Millisecond))
	}
	// The device carried the command out once, in a later awake window
	// than the one before the publish.
	logs := sim.out.String()
	if c := strings.Count(logs, `msg="sim command"`); c != 1 {
		t.Fatalf("sleepy-0 logged %d commands, want 1:\n%s", c, logs)
	}
	if w := wakesBeforeCommand(logs, 1); w <= wakes {
		t.Errorf("command carried out in the awake window it was published after (wake %d)", w)
	}
	if !strings.Contains(logs, "state=on") {
		t.Errorf("sleepy-0 did not switch its LED on:\n%s", logs)
	}
	if code := b.stop(t, 5*time.Second); code != 0 {
		t.Fatalf("bridge exit code %d", code)
	}
}

// wakesBeforeCommand counts the wakes a `bridge sim` log shows before the
// nth command the device carried out (-1 if there is no nth).
func wakesBeforeCommand(logs string, nth int) int {
	at := 0
	for range nth {
		i := strings.Index(logs[at:], `msg="sim command"`)
		if i < 0 {
			return -1
		}
		at += i + 1
	}
	return strings.Count(logs[:at], `msg="sim device awake"`)
}

// awakeConfig is the [devices] block giving learned devices an awake
// window a little shorter than a sim device's awake (its window opens
// with the wake, the bridge's with the push that follows), so that a
// command published once the device logged it sleeps is queued.
func awakeConfig(awake time.Duration) string {
	return fmt.Sprintf("[devices]\nawake = %q\n", (awake * 7 / 10).String())
}

// awaitQueuedThenOK calls publish, which publishes a command to a
// sleeping device, and waits up to limit for its results on its response
// topic reply: one queued result (queue mode: it waits for the device's
// next push), then ok with 2.04. Any other result fails the test.
func awaitQueuedThenOK(t *testing.T, sub *mqttSub, reply string, limit time.Duration, publish func()) {
	t.Helper()
	seen, queued := sub.count(reply), false // before the queued result can come
	publish()
	testkit.Eventually(t, limit, "queued then ok on "+reply, func() bool {
		var replies []string
		for _, l := range strings.Split(sub.out.String(), "\n") {
			if strings.HasPrefix(l, reply+" ") {
				replies = append(replies, l)
			}
		}
		for _, l := range replies[seen:] {
			seen++
			switch {
			case !queued && strings.Contains(l, `"status":"queued"`):
				queued = true
			case queued && strings.Contains(l, `"status":"ok"`):
				if !strings.Contains(l, `"code":"2.04"`) {
					t.Fatalf("ok result without 2.04: %s", l)
				}
				return true
			default:
				t.Fatalf("result %s, want one queued then ok", l)
			}
		}
		return false
	})
}
