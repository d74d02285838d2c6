package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// nodePeer returns the node binary and the node-coap script folder; the
// packages come from `npm ci` in e2e/testdata/nodecoap (.ci/run does it).
func nodePeer(t *testing.T) (string, string) {
	t.Helper()
	node := peer.Require(t, "node")
	dir, err := filepath.Abs("testdata/nodecoap")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "coap")); err != nil {
		if os.Getenv("BRIDGE_E2E_STRICT") == "1" {
			t.Fatalf("node-coap is required (BRIDGE_E2E_STRICT=1): run npm ci in %s", dir)
		}
		t.Skipf("node-coap not installed (npm ci in %s)", dir)
	}
	return node, dir
}

// TestE2EIngressFromNodeCoap: node-coap pushes to the bridge, mosquitto_sub
// sees the message; node-coap also observes a resource rule.
func TestE2EIngressFromNodeCoap(t *testing.T) {
	node, dir := nodePeer(t)
	b := startBridgeBin(t, bridgeSetup{rules: ingressRule + `
[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"
`})
	sub := startSub(t, b.mqttPort, "sensors/#")
	out, code := run(t, 30*time.Second, dir, node, "push.js", b.coapURL("/telemetry/node-1/temp"), "19.5")
	if code != 0 || !strings.Contains(out, "code 2.04") {
		t.Fatalf("node-coap push: exit %d %q", code, out)
	}
	sub.waitLine(t, 10*time.Second, "sensors/node-1/temp 19.5")

	mqttPub(t, b.mqttPort, "config/node-1", "c0", "-q", "1")
	obs := start(t, dir, nil, node, "push.js", b.coapURL("/config/node-1"), "", "6")
	testkit.Eventually(t, 10*time.Second, "first representation", func() bool { return strings.Contains(obs.out.String(), "notification c0") })
	mqttPub(t, b.mqttPort, "config/node-1", "c1", "-q", "1")
	testkit.Eventually(t, 10*time.Second, "notification", func() bool { return strings.Contains(obs.out.String(), "notification c1") })
}

// nodeDevice is e2e/testdata/nodecoap/nat_device.js: a node-coap device
// that serves PUT /led and pushes from the same socket at each push().
type nodeDevice struct {
	*proc
	port int
}

// startNodeDevice runs nat_device.js on a free port, pushing to pushURL,
// and waits for its first push to be answered.
func startNodeDevice(t *testing.T, pushURL string) *nodeDevice {
	t.Helper()
	node, dir := nodePeer(t)
	d := &nodeDevice{port: freeUDPRange(t, 1)}
	d.proc = start(t, dir, nil, node, "nat_device.js", pushURL, strconv.Itoa(d.port))
	d.waitPushed(t, 1)
	return d
}

// push makes the device push once more (SIGUSR2) and waits for the answer.
func (d *nodeDevice) push(t *testing.T) {
	t.Helper()
	n := strings.Count(d.out.String(), "pushed ")
	if err := d.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	d.waitPushed(t, n+1)
}

func (d *nodeDevice) waitPushed(t *testing.T, n int) {
	t.Helper()
	testkit.Eventually(t, 20*time.Second, fmt.Sprintf("push %d answered", n), func() bool {
		return strings.Contains(d.out.String(), fmt.Sprintf("pushed %d 2.", n))
	})
}

// commands returns the "command ..." lines the device printed, without the
// time since the push, and those times in milliseconds.
func (d *nodeDevice) commands(t *testing.T) (lines []string, ms []float64) {
	t.Helper()
	for _, l := range strings.Split(d.out.String(), "\n") {
		if !strings.HasPrefix(l, "command ") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("device line %q: %v", l, err)
		}
		lines, ms = append(lines, l[:i]), append(ms, v)
	}
	return lines, ms
}

// statuses returns the "status" of each result on topic, in order.
func (s *mqttSub) statuses(topic string) []string {
	var out []string
	for _, l := range s.lines(topic + " ") {
		_, rest, _ := strings.Cut(l, `"status":"`)
		st, _, _ := strings.Cut(rest, `"`)
		out = append(out, st)
	}
	return out
}

// natRules: pushes on /up/{device}/{metric}, commands to any learned device.
const natRules = `
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

// TestE2ENodeCoapBehindNAT: a node-coap device behind the test NAT pushes
// from the socket it serves on; the bridge learns it at its NAT binding.
// Its binding expires and it falls asleep; a command published then is
// queued, and delivered through the new binding its next push opens: the
// device carries it out once, and the results are queued then ok.
func TestE2ENodeCoapBehindNAT(t *testing.T) {
	const idle = time.Second
	b := startBridgeBin(t, bridgeSetup{rules: natRules, extra: "[devices]\nawake = \"400ms\"\n"})
	sub := startSub(t, b.mqttPort, "#")
	nat := peer.StartNAT(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: b.coapPort}, idle)
	dev := startNodeDevice(t, "coap://"+nat.Addr().String()+"/up/node-7/temp")
	sub.waitLine(t, 10*time.Second, "up/node-7/temp 1")
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: dev.port}
	first := nat.External(local)
	if first == nil || !strings.Contains(b.out.String(), "address="+first.String()) {
		t.Fatalf("bridge did not learn node-7 at its NAT binding %v", first)
	}

	testkit.Eventually(t, 10*idle, "NAT binding expired", func() bool { return nat.Expired() > 0 })
	mqttPub(t, b.mqttPort, "cmd/node-7/led", "on", "-q", "1")
	sub.waitLine(t, 10*time.Second, "replies/node-7/led ", `"status":"queued"`, `"position":1`)
	if lines, _ := dev.commands(t); len(lines) != 0 {
		t.Fatalf("device got %q while its binding was gone", lines)
	}

	dev.push(t)
	sub.waitLine(t, 10*time.Second, "replies/node-7/led ", `"status":"ok"`, `"code":"2.04"`)
	second := nat.External(local)
	if second == nil || second.String() == first.String() {
		t.Fatalf("NAT binding %v after the push, want a new one (was %v)", second, first)
	}
	if !strings.Contains(b.out.String(), "address="+second.String()) {
		t.Errorf("bridge did not move node-7 to its new binding %v", second)
	}
	lines, ms := dev.commands(t)
	if len(lines) != 1 || lines[0] != "command PUT /led on" {
		t.Fatalf("device carried out %q, want the command once", lines)
	}
	_, rtt, _ := strings.Cut(dev.out.String(), "pushed 2 2.04 ")
	rtt, _, _ = strings.Cut(rtt, "\n")
	t.Logf("command reached the device %.2f ms after its push was sent, whose answer took %s ms (NAT: %v then %v)", ms[0], rtt, first, second)
	if got := sub.statuses("replies/node-7/led"); strings.Join(got, ",") != "queued,ok" {
		t.Errorf("results %v, want queued then ok", got)
	}
}
