package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

const ingressRule = `
[[ingress]]
name    = "telemetry"
path    = "/telemetry/{device}/{metric}"
methods = ["POST", "PUT"]
topic   = "sensors/{device}/{metric}"
qos     = 1
`

// TestE2EIngressFromLibcoap: libcoap's coap-client pushes (CON and NON) to
// the bridge; mosquitto_sub sees the messages on the embedded broker.
func TestE2EIngressFromLibcoap(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	b := startBridgeBin(t, bridgeSetup{rules: ingressRule})
	sub := startSub(t, b.mqttPort, "sensors/#")

	out, code := run(t, 20*time.Second, ".", client, "-m", "post", "-t", "text/plain", "-e", "21.5", b.coapURL("/telemetry/greenhouse-1/temp"))
	if code != 0 {
		t.Fatalf("coap-client: exit %d: %s", code, out)
	}
	sub.waitLine(t, 10*time.Second, "sensors/greenhouse-1/temp 21.5")

	out, code = run(t, 20*time.Second, ".", client, "-N", "-m", "put", "-e", "40", b.coapURL("/telemetry/greenhouse-1/humidity"))
	if code != 0 {
		t.Fatalf("coap-client -N: exit %d: %s", code, out)
	}
	sub.waitLine(t, 10*time.Second, "sensors/greenhouse-1/humidity 40")

	// An unmatched path is 4.04, and nothing is published.
	out, _ = run(t, 20*time.Second, ".", client, "-m", "post", "-e", "x", b.coapURL("/nowhere"))
	if !strings.Contains(out, "4.04") {
		t.Fatalf("unmatched path: %q, want 4.04", out)
	}
}

// TestE2ECommandToLibcoapServer: a command published with mosquitto_pub
// becomes a CoAP PUT on libcoap's coap-server (the device), whose response
// mosquitto_sub sees; the bridge talks to mosquitto as a remote broker.
func TestE2ECommandToLibcoapServer(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	brokerPort := startMosquitto(t)
	devPort := startCoapServer(t)
	rules := fmt.Sprintf(`
[[device]]
name = "lib"
url  = "coap://127.0.0.1:%d"

[[command]]
name           = "data"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
timeout        = "10s"
`, devPort)
	startBridgeBin(t, bridgeSetup{rules: rules, broker: fmt.Sprintf("tcp://127.0.0.1:%d", brokerPort)})
	sub := startSub(t, brokerPort, "replies/#")

	mqttPub(t, brokerPort, "cmd/lib/example_data", "hello-from-mqtt", "-q", "1")
	line := sub.waitLine(t, 15*time.Second, "replies/lib/example_data", `"status":"ok"`)
	if !strings.Contains(line, `"code":"2.0`) {
		t.Fatalf("reply %q", line)
	}
	out, code := run(t, 20*time.Second, ".", client, "-m", "get", fmt.Sprintf("coap://127.0.0.1:%d/example_data", devPort))
	if code != 0 || !strings.Contains(out, "hello-from-mqtt") {
		t.Fatalf("device state after the command: exit %d %q", code, out)
	}
}

// TestE2EObserveLibcoapTime: the bridge observes libcoap's /time and
// publishes every notification.
func TestE2EObserveLibcoapTime(t *testing.T) {
	devPort := startCoapServer(t)
	rules := fmt.Sprintf(`
[[device]]
name = "clock"
url  = "coap://127.0.0.1:%d"

[[observe]]
name    = "time"
devices = ["clock"]
paths   = ["/time"]
topic   = "clock/{device}/{path...}"
`, devPort)
	b := startBridgeBin(t, bridgeSetup{rules: rules})
	sub := startSub(t, b.mqttPort, "clock/#")
	testkit.Eventually(t, 20*time.Second, "three notifications", func() bool { return sub.count("clock/clock/time") >= 3 })
}

// TestE2EResourceObservedByLibcoap: coap-client observes a resource rule
// (-s) while mosquitto_pub feeds its topic.
func TestE2EResourceObservedByLibcoap(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	rules := `
[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"
`
	b := startBridgeBin(t, bridgeSetup{rules: rules})
	mqttPub(t, b.mqttPort, "config/d1", "v0", "-q", "1")
	// The embedded broker acknowledges mosquitto_pub before it hands the
	// message to the bridge: wait until the bridge holds it.
	testkit.Eventually(t, 10*time.Second, "the bridge to hold v0", func() bool {
		out, code := run(t, 10*time.Second, ".", client, "-m", "get", b.coapURL("/config/d1"))
		return code == 0 && strings.Contains(out, "v0")
	})
	obs := start(t, ".", nil, client, "-s", "8", "-m", "get", b.coapURL("/config/d1"))
	testkit.Eventually(t, 10*time.Second, "first representation", func() bool { return strings.Contains(obs.out.String(), "v0") })
	for _, v := range []string{"v1", "v2"} {
		mqttPub(t, b.mqttPort, "config/d1", v, "-q", "1")
		testkit.Eventually(t, 10*time.Second, "notification "+v, func() bool { return strings.Contains(obs.out.String(), v) })
	}
}

// TestE2ERuleEditWhileTrafficFlows edits the rule file while coap-client
// pushes: the new rule starts working, the old one keeps working.
func TestE2ERuleEditWhileTrafficFlows(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	b := startBridgeBin(t, bridgeSetup{rules: ingressRule})
	sub := startSub(t, b.mqttPort, "#")
	for i := 0; i < 3; i++ {
		run(t, 20*time.Second, ".", client, "-m", "post", "-e", fmt.Sprint(i), b.coapURL("/telemetry/d/m"))
	}
	b.writeRules(t, ingressRule+`
[[ingress]]
name    = "alerts"
path    = "/alerts/{device}"
methods = ["POST"]
topic   = "alerts/{device}"
`)
	testkit.Eventually(t, 20*time.Second, "new rule live", func() bool {
		out, _ := run(t, 20*time.Second, ".", client, "-m", "post", "-e", "fire", b.coapURL("/alerts/d"))
		return !strings.Contains(out, "4.04")
	})
	sub.waitLine(t, 10*time.Second, "alerts/d fire")
	run(t, 20*time.Second, ".", client, "-m", "post", "-e", "after", b.coapURL("/telemetry/d/m"))
	sub.waitLine(t, 10*time.Second, "sensors/d/m after")
	if !strings.Contains(b.out.String(), "rules applied") {
		t.Fatalf("no reload logged:\n%s", b.out.String())
	}
	// A broken edit is rejected with file:line and the rules keep running.
	b.writeRules(t, ingressRule+"\n[[ingress]]\nname = \"x\"\npath = \"/x\"\ntopik = \"x\"\n")
	testkit.Eventually(t, 10*time.Second, "rejected reload logged", func() bool {
		return strings.Contains(b.out.String(), "reload rejected") && strings.Contains(b.out.String(), "e2e.toml line=")
	})
	run(t, 20*time.Second, ".", client, "-m", "post", "-e", "still", b.coapURL("/telemetry/d/m"))
	sub.waitLine(t, 10*time.Second, "sensors/d/m still")
}

// TestE2ECoapsPSK: libcoap's coap-client with a pre-shared key pushes to
// the bridge's coaps listener; the identity rule lets it publish as itself
// only.
func TestE2ECoapsPSK(t *testing.T) {
	client := peer.Require(t, "coap-client-gnutls")
	b0 := t.TempDir()
	psk := b0 + "/psk.toml"
	writeTestFile(t, psk, "[[psk]]\nidentity = \"dev1\"\nkey = \"secret-key-1\"\n")
	rules := `
[[ingress]]
name     = "secure"
path     = "/secure/{device}"
methods  = ["POST"]
topic    = "secure/{device}"
identity = "{device}"
`
	b := startBridgeBin(t, bridgeSetup{rules: rules, dtls: true, extra: fmt.Sprintf("psk_file = %q\n", psk)})
	sub := startSub(t, b.mqttPort, "secure/#")
	url := fmt.Sprintf("coaps://127.0.0.1:%d/secure/dev1", b.dtlsPort)
	out, code := run(t, 30*time.Second, ".", client, "-u", "dev1", "-k", "secret-key-1", "-m", "post", "-e", "hi", url)
	if code != 0 {
		t.Fatalf("coap-client-gnutls: exit %d %s", code, out)
	}
	sub.waitLine(t, 10*time.Second, "secure/dev1 hi")
	out, _ = run(t, 30*time.Second, ".", client, "-u", "dev1", "-k", "secret-key-1", "-m", "post", "-e", "spoof",
		fmt.Sprintf("coaps://127.0.0.1:%d/secure/dev2", b.dtlsPort))
	if !strings.Contains(out, "4.03") {
		t.Fatalf("dev1 posting as dev2: %q, want 4.03", out)
	}
}
