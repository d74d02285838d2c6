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

// TestE2EDemoTopology runs what docker-compose.yml runs, as local
// processes: mosquitto, `bridge sim` with three devices and the bridge in
// remote-broker mode on rules/demo.toml (its device ports moved to free
// ones), and checks the demo's flows.
func TestE2EDemoTopology(t *testing.T) {
	brokerPort := startMosquitto(t)
	base := freeUDPRange(t, 3)
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
	b := startBridgeBin(t, bridgeSetup{rules: rules, broker: fmt.Sprintf("tcp://127.0.0.1:%d", brokerPort)})
	sub := startSub(t, brokerPort, "#")

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
