package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
)

// TestRouteAgreesWithRunningBridge: "bridge route" over the config a
// running bridge uses predicts the topic and payload that the bridge
// publishes when libcoap's coap-client makes the same push.
func TestRouteAgreesWithRunningBridge(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	b := startBridgeBin(t, bridgeSetup{rules: `
[[ingress]]
name      = "hot"
path      = "/hot/{device}"
methods   = ["POST"]
topic     = "alerts/{device}/temp"
qos       = 1
where     = "payload.temp > 30"
transform = "{'celsius': payload.temp, 'dev': captures.device, 'path': path}"
`})
	sub := startSub(t, b.mqttPort, "alerts/#")
	const payload = `{"temp":31.5}`

	out, code := run(t, 30*time.Second, b.dir, bridgeBin(t), "route", "--json", "coap", "POST", "/hot/gh-1", "-p", payload, "-t", "json")
	if code != 0 {
		t.Fatalf("bridge route: exit %d\n%s", code, out)
	}
	var predicted struct {
		Publish struct {
			Topic   string `json:"topic"`
			Payload struct {
				Text string `json:"text"`
			} `json:"payload"`
		} `json:"publish"`
	}
	if err := json.Unmarshal([]byte(out), &predicted); err != nil || predicted.Publish.Topic == "" {
		t.Fatalf("route output: %v\n%s", err, out)
	}

	out, code = run(t, 20*time.Second, ".", client, "-m", "post", "-t", "application/json", "-e", payload, b.coapURL("/hot/gh-1"))
	if code != 0 {
		t.Fatalf("coap-client: exit %d: %s", code, out)
	}
	want := predicted.Publish.Topic + " " + predicted.Publish.Payload.Text
	if got := sub.waitLine(t, 10*time.Second, predicted.Publish.Topic+" "); got != want {
		t.Fatalf("the bridge published %q; bridge route predicted %q", got, want)
	}

	// A push that where drops is not routed: exit 1.
	if out, code := run(t, 30*time.Second, b.dir, bridgeBin(t), "route", "coap", "POST", "/hot/gh-2", "-p", `{"temp":3}`, "-t", "json"); code != 1 {
		t.Fatalf("bridge route for a filtered push: exit %d\n%s", code, out)
	}
}

// TestRouteCommandAgreesWithRunningBridge: for a command publish, "bridge
// route" names the URL and method that the running bridge then reports
// in its result on the response topic, after libcoap's coap-server
// answered.
func TestRouteCommandAgreesWithRunningBridge(t *testing.T) {
	devPort := startCoapServer(t)
	b := startBridgeBin(t, bridgeSetup{rules: fmt.Sprintf(`
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
`, devPort)})
	sub := startSub(t, b.mqttPort, "replies/#")

	out, code := run(t, 30*time.Second, b.dir, bridgeBin(t), "route", "--json", "mqtt", "cmd/lib/example_data", "-p", "hi")
	if code != 0 {
		t.Fatalf("bridge route: exit %d\n%s", code, out)
	}
	var predicted struct {
		Method        string `json:"method"`
		URI           string `json:"uri"`
		ResponseTopic string `json:"response_topic"`
	}
	if err := json.Unmarshal([]byte(out), &predicted); err != nil || predicted.URI == "" {
		t.Fatalf("route output: %v\n%s", err, out)
	}

	mqttPub(t, b.mqttPort, "cmd/lib/example_data", "hi", "-q", "1")
	line := sub.waitLine(t, 15*time.Second, predicted.ResponseTopic+" ", `"status":"ok"`)
	var result struct {
		Method string `json:"method"`
		URL    string `json:"url"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, predicted.ResponseTopic+" ")), &result); err != nil {
		t.Fatalf("result %q: %v", line, err)
	}
	if result.URL != predicted.URI || result.Method != predicted.Method {
		t.Fatalf("the bridge sent %s %s; bridge route predicted %s %s", result.Method, result.URL, predicted.Method, predicted.URI)
	}
}
