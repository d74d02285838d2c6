package rules_test

import (
	"fmt"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

func Example() {
	set, err := rules.Parse(rules.Source{Name: "rules.toml", Data: []byte(`
[[device]]
name = "greenhouse-1"
url  = "coap://127.0.0.1:5690"

[[ingress]]
name    = "telemetry"
path    = "/telemetry/{device}/{metric}"
topic   = "sensors/{device}/{metric}"
payload = "json"

[[command]]
name   = "actuators"
filter = "cmd/{device}/{resource...}"
method = "PUT"
url    = "coap://{device}/{resource...}"
`)})
	if err != nil {
		fmt.Println(err) // every problem, one "file:line: message" per line
		return
	}

	// CoAP → MQTT: a device POSTs to /telemetry/greenhouse-1/temp.
	route, caps, _ := set.MatchPath(message.POST, []string{"telemetry", "greenhouse-1", "temp"}, nil)
	pub, _, _ := route.Ingress.Prepare(caps, rules.Message{
		Payload: rules.Payload{Data: []byte("21.5"), Format: message.TextPlain, HasFormat: true},
		Time:    time.Now(),
	})
	fmt.Println(pub.Topic, string(pub.Payload))

	// MQTT → CoAP: a publish on cmd/greenhouse-1/led/red.
	cmd, caps, _ := set.MatchCommand("cmd/greenhouse-1/led/red", nil)
	target, _ := set.Target(cmd, caps)
	fmt.Println(cmd.Method, target.Host, target.Path)

	// A device name that would escape its topic level is refused.
	_, _, err = route.Ingress.Prepare(rules.Captures{{Name: "device", Value: "a/b"}, {Name: "metric", Value: "t"}}, rules.Message{})
	fmt.Println(err)
	// Output:
	// sensors/greenhouse-1/temp 21.5
	// PUT 127.0.0.1:5690 [led red]
	// {device}: rules: captured value escapes its segment: "a/b" contains '/'
}
