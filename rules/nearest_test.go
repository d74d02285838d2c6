package rules

import (
	"strings"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

const nearRules = `
[[ingress]]
name    = "telemetry"
path    = "/telemetry/{device}/{metric}"
methods = ["POST", "PUT"]
topic   = "sensors/{device}/{metric}"

[[ingress]]
name  = "tele-alarm"
path  = "/telemetry/alarm"
topic = "alarm"

[[ingress]]
name  = "other"
path  = "/other/{x...}"
topic = "o/x/{x...}"

[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"

[[command]]
name   = "actuators"
filter = "cmd/{device}/{resource...}"
method = "PUT"
url    = "coap://{device}/{resource...}"

[[command]]
name   = "any"
filter = "{site}/set"
method = "PUT"
url    = "coap://{site}/set"
`

// TestNearestRoutes: rules are ranked by the leading segments they match,
// a rule matching the path but not the method first, and each says where
// it stopped.
func TestNearestRoutes(t *testing.T) {
	s := mustLoad(t, nearRules)
	segs := func(p string) []string { return strings.Split(strings.TrimPrefix(p, "/"), "/") }

	got := s.NearestRoutes(message.POST, segs("/telemetry/gh-1"), 3)
	if len(got) != 3 || got[0].Name != "telemetry" || got[1].Name != "tele-alarm" {
		t.Fatalf("ranking %+v", got)
	}
	if got[0].Matched != 2 || got[0].Reason != "the path ends after 2 segments; the rule wants {metric} next" {
		t.Errorf("telemetry: %d %q", got[0].Matched, got[0].Reason)
	}
	if got[1].Matched != 1 || got[1].Reason != `segment 2 is "gh-1"; the rule wants "alarm"` {
		t.Errorf("tele-alarm: %d %q", got[1].Matched, got[1].Reason)
	}

	got = s.NearestRoutes(message.GET, segs("/telemetry/gh-1/temp"), 2)
	if len(got) != 2 || !got[0].MethodOnly || got[0].Name != "telemetry" ||
		got[0].Reason != "matches the path but allows POST, PUT, not GET" {
		t.Fatalf("method mismatch: %+v", got)
	}

	got = s.NearestRoutes(message.POST, segs("/config/d1/extra"), 1)
	if len(got) != 1 || got[0].Kind != KindResource || got[0].Matched != 2 ||
		got[0].Reason != `the path goes on with "extra" after the rule's last segment` {
		t.Fatalf("longer path: %+v", got)
	}
}

// TestNearestCommands ranks command filters by the topic levels matched;
// a '$' topic is never matched by a filter starting with a capture.
func TestNearestCommands(t *testing.T) {
	s := mustLoad(t, nearRules)
	got := s.NearestCommands("cmd/lamp", 2)
	if len(got) != 2 || got[0].Name != "actuators" || got[0].Matched != 2 ||
		got[0].Reason != "the topic ends after 2 levels; the rule wants {resource...} next" {
		t.Fatalf("short topic: %+v", got)
	}
	got = s.NearestCommands("$SYS/set", 2)
	if got[0].Name != "actuators" || got[1].Name != "any" || !strings.Contains(got[1].Reason, "[MQTT-4.7.2-1]") {
		t.Fatalf("$ topic: %+v", got)
	}
}

// TestPrepareTrace records what where and transform saw and decided, and
// PrepareTrace publishes what Prepare does.
func TestPrepareTrace(t *testing.T) {
	s := mustLoad(t, `
[[ingress]]
name      = "hot"
path      = "/hot/{device}"
topic     = "alerts/{device}"
where     = "payload.temp > 30"
transform = "{'c': payload.temp}"
`)
	out := &s.Ingress[0].Output
	caps := Captures{{Name: "device", Value: "d1"}}
	msg := func(js string) Message {
		return Message{Payload: Payload{Data: []byte(js), Format: message.AppJSON, HasFormat: true}}
	}
	var tr Trace
	pub, keep, err := out.PrepareTrace(caps, msg(`{"temp":31}`), &tr)
	want, _, _ := out.Prepare(caps, msg(`{"temp":31}`))
	if err != nil || !keep || string(pub.Payload) != `{"c":31}` || string(want.Payload) != string(pub.Payload) {
		t.Fatalf("prepare: %s %v %v (Prepare: %s)", pub.Payload, keep, err, want.Payload)
	}
	if !tr.WhereRan || !tr.Where || !tr.TransformRan || tr.Decoded.(map[string]any)["temp"] != float64(31) {
		t.Fatalf("trace %+v", tr)
	}
	tr = Trace{}
	if _, keep, err := out.PrepareTrace(caps, msg(`{"temp":20}`), &tr); err != nil || keep || !tr.WhereRan || tr.Where || tr.TransformRan {
		t.Fatalf("filtered: keep=%v err=%v trace %+v", keep, err, tr)
	}
}
