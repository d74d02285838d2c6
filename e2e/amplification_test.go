package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// TestE2ELibcoapLargeResourceWithEcho: libcoap's coap-client, a plain-UDP
// source the bridge does not know, GETs and observes a resource rule
// holding 4 KiB. The bridge answers it first within 3x its request (a small
// block with an Echo value, or 4.01 + Echo); coap-client still gets the
// whole value and every notification.
func TestE2ELibcoapLargeResourceWithEcho(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	rules := `
[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"
`
	b := startBridgeBin(t, bridgeSetup{rules: rules})
	value := func(tag string) string { return tag + strings.Repeat("0123456789abcdef", 256)[len(tag):] }
	mqttPub(t, b.mqttPort, "config/d1", value("v0"), "-q", "1", "-r")
	before := metric(t, b, "bridge_coap_received_total")
	var out string
	testkit.Eventually(t, 20*time.Second, "coap-client to get the 4 KiB value", func() bool {
		var code int
		out, code = run(t, 20*time.Second, ".", client, "-m", "get", b.coapURL("/config/d1"))
		return code == 0 && strings.Contains(out, value("v0"))
	})
	t.Logf("coap-client GET of 4 KiB: %v datagrams received by the bridge; Echo values sent %v, sources verified %v",
		metric(t, b, "bridge_coap_received_total")-before, metric(t, b, "bridge_coap_echo_challenges_total"), metric(t, b, "bridge_coap_echo_verified_total"))

	obs := start(t, ".", nil, client, "-s", "10", "-m", "get", b.coapURL("/config/d1"))
	testkit.Eventually(t, 10*time.Second, "first representation", func() bool { return strings.Contains(obs.out.String(), value("v0")) })
	for _, v := range []string{"v1", "v2"} {
		mqttPub(t, b.mqttPort, "config/d1", value(v), "-q", "1", "-r")
		testkit.Eventually(t, 10*time.Second, "notification "+v, func() bool { return strings.Contains(obs.out.String(), value(v)) })
	}
	if n := metric(t, b, "bridge_coap_echo_verified_total"); n < 1 {
		t.Errorf("bridge_coap_echo_verified_total %v: coap-client never returned an Echo", n)
	}
}
