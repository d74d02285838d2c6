package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// TestE2ESimCoapsPush: a `bridge sim --push coaps://` device pushes to the
// bridge's coaps listener with its PSK identity (an identity rule) and a
// command through MQTT reaches it on its DTLS session, also after a sleep
// (a new handshake from the same port).
func TestE2ESimCoapsPush(t *testing.T) {
	const sleep, awake = 3 * time.Second, time.Second
	dir := t.TempDir()
	psk := dir + "/psk.toml"
	writeTestFile(t, psk, "[[psk]]\nidentity = \"node-0\"\nkey = \"secret-key-1\"\n")
	rules := `
[[ingress]]
name     = "uplink"
path     = "/up/{device}/{metric}"
methods  = ["POST"]
topic    = "up/{device}/{metric}"
identity = "{device}"

[[command]]
name           = "downlink"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coaps://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
timeout        = "10s"
`
	b := startBridgeBin(t, bridgeSetup{rules: rules, dtls: true, extra: fmt.Sprintf("psk_file = %q\n", psk) + awakeConfig(awake)})
	sub := startSub(t, b.mqttPort, "#")
	port := freeUDPRange(t, 1)
	sim := start(t, ".", nil, bridgeBin(t), "sim", "--devices", "1", "--name-prefix", "node-", "--psk-identity-prefix", "node-",
		"--psk-key", "secret-key-1", "--base-port", strconv.Itoa(port), "--listen-host", "127.0.0.1",
		"--push", fmt.Sprintf("coaps://127.0.0.1:%d/up/{device}/{metric}", b.dtlsPort), "--sleep", sleep.String(), "--awake", awake.String())
	sub.waitLine(t, 20*time.Second, "up/node-0/battery ")
	// Awake: the command goes on the session the push opened.
	mqttPub(t, b.mqttPort, "cmd/node-0/actuators/led", "on", "-q", "1")
	sub.waitLine(t, 10*time.Second, "replies/node-0/actuators/led", `"status":"ok"`, `"code":"2.04"`)
	// Asleep: the device closed its socket and with it the session; it
	// handshakes again at its next wake and the command reaches it then.
	asleep := func() int { return strings.Count(sim.out.String(), `msg="sim device asleep"`) }
	n := asleep()
	testkit.Eventually(t, 2*sleep, "node-0 asleep", func() bool { return asleep() > n })
	wakes := strings.Count(sim.out.String(), `msg="sim device awake"`)
	var published time.Time
	awaitQueuedThenOK(t, sub, "replies/node-0/actuators/led", 10*time.Second+6*sleep, func() {
		published = time.Now()
		mqttPub(t, b.mqttPort, "cmd/node-0/actuators/led", "off", "-q", "1")
	})
	t.Logf("ok result %v after the command", time.Since(published).Round(time.Millisecond))
	logs := sim.out.String()
	if c := strings.Count(logs, `msg="sim command"`); c != 2 {
		t.Errorf("node-0 logged %d commands, want 2:\n%s", c, logs)
	}
	if w := wakesBeforeCommand(logs, 2); w <= wakes {
		t.Errorf("second command carried out in the awake window it was published after (wake %d)", w)
	}
}

// TestE2ESimSleepBehindNAT: `bridge sim --push --sleep` behind the test NAT,
// whose bindings expire while the device sleeps. The bridge learns the
// device at the NAT's binding, never at its own port, and a command
// published while it sleeps reaches it through the binding a later push
// opened.
func TestE2ESimSleepBehindNAT(t *testing.T) {
	const sleep, awake, idle = 4 * time.Second, time.Second, 1500 * time.Millisecond
	rules := `
[[ingress]]
name    = "uplink"
path    = "/up/{device}/{metric}"
methods = ["POST"]
topic   = "up/{device}/{metric}"

[[command]]
name           = "downlink"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
timeout        = "10s"
`
	b := startBridgeBin(t, bridgeSetup{rules: rules, extra: awakeConfig(awake)})
	sub := startSub(t, b.mqttPort, "#")
	nat := peer.StartNAT(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: b.coapPort}, idle)
	port := freeUDPRange(t, 1)
	sim := start(t, ".", nil, bridgeBin(t), "sim", "--devices", "1", "--name-prefix", "tracker-",
		"--base-port", strconv.Itoa(port), "--listen-host", "127.0.0.1",
		"--push", "coap://"+nat.Addr().String()+"/up/{device}/{metric}", "--sleep", sleep.String(), "--awake", awake.String())
	sub.waitLine(t, 20*time.Second, "up/tracker-0/battery ")
	devAddr := fmt.Sprintf("127.0.0.1:%d", port)
	binding := nat.External(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if binding == nil || !strings.Contains(b.out.String(), "address="+binding.String()) {
		t.Fatalf("bridge did not learn tracker-0 at its NAT binding %v:\n%s", binding, b.out.String())
	}

	// Asleep, and its binding gone: the command waits for a later push.
	asleep := func() int { return strings.Count(sim.out.String(), `msg="sim device asleep"`) }
	n := asleep()
	testkit.Eventually(t, 2*sleep, "tracker-0 asleep", func() bool { return asleep() > n })
	testkit.Eventually(t, sleep-awake, "NAT binding expired", func() bool { return nat.Expired() > 0 })
	wakes := strings.Count(sim.out.String(), `msg="sim device awake"`)
	var published time.Time
	awaitQueuedThenOK(t, sub, "replies/tracker-0/actuators/led", 10*time.Second+6*sleep, func() {
		published = time.Now()
		mqttPub(t, b.mqttPort, "cmd/tracker-0/actuators/led", "on", "-q", "1")
	})
	t.Logf("ok result %v after the command", time.Since(published).Round(time.Millisecond))

	logs := sim.out.String()
	if c := strings.Count(logs, `msg="sim command"`); c != 1 {
		t.Fatalf("tracker-0 logged %d commands, want 1:\n%s", c, logs)
	}
	if w := wakesBeforeCommand(logs, 1); w <= wakes {
		t.Errorf("command carried out in the awake window it was published after (wake %d)", w)
	}
	// Every address the bridge learned or moved it to was a NAT binding.
	for _, l := range strings.Split(b.out.String(), "\n") {
		if strings.Contains(l, "device=tracker-0") && strings.Contains(l, "address="+devAddr) {
			t.Errorf("bridge reached tracker-0 at its own port, past the NAT: %s", l)
		}
	}
	if !strings.Contains(b.out.String(), `msg="device moved" device=tracker-0`) {
		t.Errorf("bridge did not follow tracker-0 to a new binding:\n%s", b.out.String())
	}
}

// TestE2ESimCoapsPushResumes: a `bridge sim --push coaps:// --sleep` device
// closes its socket while asleep and keeps its DTLS session in memory, so
// every wake after the first resumes it: the bridge counts one full
// handshake and the rest in bridge_dtls_handshakes_resumed_total.
func TestE2ESimCoapsPushResumes(t *testing.T) {
	const sleep, awake, wakes = 1500 * time.Millisecond, 500 * time.Millisecond, 4
	dir := t.TempDir()
	psk := dir + "/psk.toml"
	writeTestFile(t, psk, "[[psk]]\nidentity = \"node-0\"\nkey = \"secret-key-1\"\n")
	rules := `
[[ingress]]
name     = "uplink"
path     = "/up/{device}/{metric}"
methods  = ["POST"]
topic    = "up/{device}/{metric}"
identity = "{device}"
`
	b := startBridgeBin(t, bridgeSetup{rules: rules, dtls: true, extra: fmt.Sprintf("psk_file = %q\n", psk) + awakeConfig(awake)})
	port := freeUDPRange(t, 1)
	sim := start(t, ".", nil, bridgeBin(t), "sim", "--devices", "1", "--name-prefix", "node-", "--psk-identity-prefix", "node-",
		"--psk-key", "secret-key-1", "--base-port", strconv.Itoa(port), "--listen-host", "127.0.0.1",
		"--push", fmt.Sprintf("coaps://127.0.0.1:%d/up/{device}/{metric}", b.dtlsPort), "--sleep", sleep.String(), "--awake", awake.String())
	asleep := func() int { return strings.Count(sim.out.String(), `msg="sim device asleep"`) }
	testkit.Eventually(t, 20*time.Second+wakes*sleep, "node-0 asleep after its wakes", func() bool { return asleep() >= wakes })
	// Asleep: no handshake is under way while the counters are read.
	m := metrics(t, b, "bridge_dtls_handshakes_ok_total", "bridge_dtls_handshakes_resumed_total")
	ok, resumed := m["bridge_dtls_handshakes_ok_total"], m["bridge_dtls_handshakes_resumed_total"]
	t.Logf("%d wakes: %v handshakes, %v resumed", asleep(), ok, resumed)
	if ok < wakes || resumed != ok-1 {
		t.Errorf("bridge counted %v handshakes, %v resumed; want at least %d, all but the first resumed", ok, resumed, wakes)
	}
	if n := strings.Count(b.out.String(), `msg="dtls session established"`); n < wakes {
		t.Errorf("bridge logged %d sessions, want at least %d", n, wakes)
	}
}
