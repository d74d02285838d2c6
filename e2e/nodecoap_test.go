package e2e

import (
	"os"
	"path/filepath"
	"strings"
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
