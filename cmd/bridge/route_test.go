package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const routeRules = `[[device]]
name = "lamp"
url  = "coap://127.0.0.1:5699"

[[device]]
name = "sleepy"

[[ingress]]
name    = "telemetry"
path    = "/telemetry/{device}/{metric}"
methods = ["POST", "PUT"]
topic   = "sensors/{device}/{metric}"
qos     = 1
payload = "json"

[[ingress]]
name      = "hot"
path      = "/hot/{device}"
topic     = "alerts/{device}"
retain    = true
where     = "payload.temp > 30"
transform = "{'celsius': payload.temp, 'dev': captures.device}"

[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"

[[resource]]
name  = "mine"
path  = "/mine/{x}"
topic = "mine/{identity}/{x}"

[[command]]
name           = "actuators"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
content_format = "cbor"
qos            = 1
`

// routeSetup writes a config and rule file as bridge run reads them and
// returns the config path.
func routeSetup(t *testing.T, rulesText string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "config.toml", "rules = [\"rules/*.toml\"]\n")
	if err := os.Mkdir(filepath.Join(dir, "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "rules/r.toml", rulesText)
	return cfg
}

// runRoute runs "bridge route" in process and returns its exit code,
// stdout and stderr.
func runRoute(t *testing.T, cfg string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	all := append([]string{"route", "--config", cfg}, args...)
	code := execute(all, &out, &errb)
	return code, out.String(), errb.String()
}

// routeJSON runs "bridge route --json" and decodes its output.
func routeJSONOut(t *testing.T, cfg string, wantCode int, args ...string) map[string]any {
	t.Helper()
	code, out, errs := runRoute(t, cfg, append([]string{"--json"}, args...)...)
	if code != wantCode {
		t.Fatalf("route %q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, wantCode, out, errs)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("route %q: output is not JSON: %v\n%s", args, err, out)
	}
	return v
}

// at walks a decoded JSON document along keys.
func at(t *testing.T, v any, keys ...string) any {
	t.Helper()
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("no object at %q in %v", k, v)
		}
		v = m[k]
	}
	return v
}

// TestRouteIngressText: a text/plain push through a payload = "json" rule
// prints the rule with file:line, captures, topic, the converted payload,
// QoS and retain, and exits 0.
func TestRouteIngressText(t *testing.T) {
	cfg := routeSetup(t, routeRules)
	code, out, errs := runRoute(t, cfg, "coap", "POST", "/telemetry/gh-1/temp", "--payload", "21.5", "--content-format", "text/plain")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	file := filepath.Join(filepath.Dir(cfg), "rules", "r.toml")
	for _, want := range []string{
		`POST /telemetry/gh-1/temp: routed by [[ingress]] "telemetry" /telemetry/{device}/{metric} (` + file + `:8)`,
		"captures      device=gh-1 metric=temp",
		"topic         sensors/gh-1/temp",
		"payload out   21.5",
		"content type  application/json",
		"qos, retain   1, false",
		"2.04 Changed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestRouteIngressCBORWhereTransform: a CBOR push is decoded for where and
// transform; --json shows the decoded value, both verdicts and the
// message published.
func TestRouteIngressCBORWhereTransform(t *testing.T) {
	cfg := routeSetup(t, routeRules)
	// {"temp": 31.5} in CBOR (RFC 8949): map(1), text(4) "temp", float16 31.5
	cborFile := filepath.Join(t.TempDir(), "hot.cbor")
	if err := os.WriteFile(cborFile, []byte{0xa1, 0x64, 't', 'e', 'm', 'p', 0xf9, 0x4f, 0xe0}, 0o644); err != nil {
		t.Fatal(err)
	}
	v := routeJSONOut(t, cfg, 0, "coap", "PUT", "/hot/gh-1", "-f", cborFile, "-t", "cbor")
	if at(t, v, "routed") != true || at(t, v, "action") != "publish" || at(t, v, "code") != "2.04 Changed" {
		t.Fatalf("outcome: %v", v)
	}
	if at(t, v, "rule", "name") != "hot" || at(t, v, "captures", "device") != "gh-1" {
		t.Fatalf("rule and captures: %v", v)
	}
	if at(t, v, "decoded", "temp") != 31.5 || at(t, v, "where", "result") != true ||
		at(t, v, "transform", "result", "celsius") != 31.5 || at(t, v, "transform", "result", "dev") != "gh-1" {
		t.Fatalf("decoded, where, transform: %v", v)
	}
	if at(t, v, "publish", "topic") != "alerts/gh-1" || at(t, v, "publish", "payload", "text") != `{"celsius":31.5,"dev":"gh-1"}` ||
		at(t, v, "publish", "retain") != true || at(t, v, "publish", "qos") != 0.0 ||
		at(t, v, "publish", "content_type") != "application/json" {
		t.Fatalf("publish: %v", at(t, v, "publish"))
	}

	// where false: the device hears 2.04, nothing is published: exit 1.
	v = routeJSONOut(t, cfg, 1, "coap", "POST", "/hot/gh-1", "-p", `{"temp":20}`, "-t", "json")
	if at(t, v, "action") != "filtered" || at(t, v, "where", "result") != false || at(t, v, "transform", "ran") != false {
		t.Fatalf("filtered: %v", v)
	}

	// CBOR that does not decode is 4.15, counted as convert.
	v = routeJSONOut(t, cfg, 1, "coap", "POST", "/telemetry/gh-1/temp", "-p", "\xff\xff", "-t", "cbor")
	if at(t, v, "code") != "4.15 Unsupported Content-Format" || at(t, v, "reason") != "convert" {
		t.Fatalf("bad CBOR: %v", v)
	}
}

// TestRouteNotRouted: a path no rule takes lists the nearest rules with
// the first segment that differs; a path matched but not for the method
// says which methods the rule allows. Both exit 1.
func TestRouteNotRouted(t *testing.T) {
	cfg := routeSetup(t, routeRules)
	code, out, _ := runRoute(t, cfg, "coap", "POST", "/telemtry/gh-1/temp", "-p", "1")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		"POST /telemtry/gh-1/temp: not routed: 4.04 Not Found",
		`bridge_rule_errors_total{reason="no_route"}`,
		"nearest ingress, resource and proxy rules:",
		`segment 1 is "telemtry"; the rule wants "telemetry"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// A segment bound to a capture that holds '/' is refused, as the
	// server refuses it: 4.00, counted as escape.
	v := routeJSONOut(t, cfg, 1, "coap", "POST", "/telemetry/a%2Fb/temp", "-p", "1")
	if at(t, v, "path") != "/telemetry/a%2Fb/temp" || at(t, v, "code") != "4.00 Bad Request" || at(t, v, "reason") != "escape" {
		t.Fatalf("escape: %v", v)
	}
	v = routeJSONOut(t, cfg, 1, "coap", "GET", "/telemetry/gh-1/temp")
	cs, _ := at(t, v, "candidates").([]any)
	if at(t, v, "code") != "4.05 Method Not Allowed" || len(cs) != 3 {
		t.Fatalf("method: %v", v)
	}
	if at(t, cs[0], "name") != "telemetry" || at(t, cs[0], "method_mismatch") != true ||
		at(t, cs[0], "reason") != "matches the path but allows POST, PUT, not GET" {
		t.Fatalf("first candidate: %v", cs[0])
	}
}

// TestRouteResourceAndDiscovery: GET on a resource rule names the topic
// it reads; GET /.well-known/core is discovery; another method there 4.05.
func TestRouteResourceAndDiscovery(t *testing.T) {
	cfg := routeSetup(t, routeRules)
	v := routeJSONOut(t, cfg, 0, "coap", "GET", "/config/sim-0")
	if at(t, v, "action") != "read" || at(t, v, "read_topic") != "config/sim-0" || at(t, v, "rule", "kind") != "resource" {
		t.Fatalf("resource: %v", v)
	}
	// {identity} in a resource topic is the coaps client's identity.
	v = routeJSONOut(t, cfg, 0, "coap", "GET", "/mine/cfg", "--identity", "dev1")
	if at(t, v, "read_topic") != "mine/dev1/cfg" {
		t.Fatalf("identity in the topic: %v", v)
	}
	v = routeJSONOut(t, cfg, 0, "coap", "GET", "coap://127.0.0.1/.well-known/core?rt=config")
	if at(t, v, "action") != "discovery" || at(t, v, "code") != "2.05 Content" {
		t.Fatalf("discovery: %v", v)
	}
	v = routeJSONOut(t, cfg, 1, "coap", "POST", "/.well-known/core")
	if at(t, v, "code") != "4.05 Method Not Allowed" {
		t.Fatalf("POST on discovery: %v", v)
	}
}

// TestRouteProxy: a request under a proxy rule's path routes to the
// device resource it would be forwarded to; the answer is the device's at
// run time, so the JSON has no code; a method the rule does not allow is
// not routed, with the code the client would hear.
func TestRouteProxy(t *testing.T) {
	cfg := routeSetup(t, routeRules+`
[[proxy]]
name    = "devices"
path    = "/devices/{device}/{path...}"
url     = "coap://{device}/{path...}"
methods = ["GET"]
`)
	v := routeJSONOut(t, cfg, 0, "coap", "GET", "/devices/lamp/state/on")
	if at(t, v, "action") != "proxy" || at(t, v, "proxy_to") != "coap://127.0.0.1:5699/state/on" || at(t, v, "rule", "kind") != "proxy" {
		t.Fatalf("proxy: %v", v)
	}
	if _, ok := v["code"]; ok {
		t.Fatalf("a proxied request has a code before the device answered: %v", v)
	}
	v = routeJSONOut(t, cfg, 1, "coap", "PUT", "/devices/lamp/state")
	if c, _ := v["code"].(string); !strings.HasPrefix(c, "4.05") {
		t.Fatalf("PUT through a GET-only proxy rule: %v", v)
	}
}

// TestRouteMQTTCommand: a command publish shows the device, method, URI,
// Content-Format, the payload as sent (JSON converted to CBOR) and the
// response topic; a device without url is reached where it was learned.
func TestRouteMQTTCommand(t *testing.T) {
	cfg := routeSetup(t, routeRules)
	v := routeJSONOut(t, cfg, 0, "mqtt", "cmd/lamp/actuators/led", "--payload", `{"on":true}`)
	if at(t, v, "rule", "name") != "actuators" || at(t, v, "device") != "lamp" || at(t, v, "method") != "PUT" ||
		at(t, v, "uri") != "coap://127.0.0.1:5699/actuators/led" || at(t, v, "content_format") != 60.0 ||
		at(t, v, "response_topic") != "replies/lamp/actuators/led" || at(t, v, "learned") != nil {
		t.Fatalf("command: %v", v)
	}
	// {"on": true} in CBOR: map(1), text(2) "on", true
	if got, _ := base64.StdEncoding.DecodeString(at(t, v, "payload", "base64").(string)); !bytes.Equal(got, []byte{0xa1, 0x62, 'o', 'n', 0xf5}) {
		t.Fatalf("payload sent %x", got)
	}

	code, out, _ := runRoute(t, cfg, "mqtt", "cmd/sleepy/led", "-p", "1")
	if code != 0 || !strings.Contains(out, "sleepy (a [[device]] without url): sent over coap to the address it last spoke from, learned at run time") {
		t.Fatalf("learned device: exit %d\n%s", code, out)
	}

	// Not JSON for a cbor rule: refused before sending, exit 1.
	v = routeJSONOut(t, cfg, 1, "mqtt", "cmd/lamp/led", "-p", "on")
	if at(t, v, "reason") != "convert" || at(t, v, "uri") != nil {
		t.Fatalf("bad JSON for cbor: %v", v)
	}
	// One level short of {resource...}: delivered by the filter, unrouted.
	code, out, _ = runRoute(t, cfg, "mqtt", "cmd/lamp")
	if code != 1 || !strings.Contains(out, "a command filter delivers it but no command rule matches") ||
		!strings.Contains(out, "the topic ends after 2 levels; the rule wants {resource...} next") {
		t.Fatalf("short topic: exit %d\n%s", code, out)
	}
	// A resource rule's topic is kept for CoAP readers.
	v = routeJSONOut(t, cfg, 0, "mqtt", "config/d1", "-p", "x")
	rs, _ := at(t, v, "resources").([]any)
	if len(rs) != 1 || at(t, rs[0], "path") != "/config/d1" || at(t, v, "subscribed") != false {
		t.Fatalf("resource topic: %v", v)
	}
}

// TestRouteUsageExitsTwo: bad arguments and flags exit 2 with a message.
func TestRouteUsageExitsTwo(t *testing.T) {
	cfg := routeSetup(t, routeRules)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing subcommand: coap or mqtt"},
		{[]string{"http"}, `unknown subcommand "http"`},
		{[]string{"coap", "BREW", "/x"}, `unknown method "BREW"`},
		{[]string{"coap", "POST"}, "want METHOD and PATH, got 1 arguments"},
		{[]string{"mqtt"}, "want exactly one TOPIC, got 0 arguments"},
		{[]string{"mqtt", "cmd/+/led"}, "without wildcards"},
		{[]string{"coap", "POST", "/x", "-t", "nope"}, `unknown content format "nope"`},
		{[]string{"coap", "POST", "/x", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"coap", "POST", "/x", "-p", "1", "-f", "a"}, "not both"},
	} {
		code, out, errs := runRoute(t, cfg, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("route %q: exit %d, stderr %q, want 2 and %q (stdout %q)", tc.args, code, errs, tc.want, out)
		}
	}
}

// TestRouteBadRulesExitTwo: rule files that do not load are reported as
// bridge check reports them, file:line, and exit 2 (1 means not routed).
func TestRouteBadRulesExitTwo(t *testing.T) {
	cfg := routeSetup(t, "[[ingress]]\nname = \"t\"\npath = \"/t/{device}\"\ntopik = \"t/{device}\"\n")
	code, out, errs := runRoute(t, cfg, "coap", "POST", "/t/d1")
	want := filepath.Join(filepath.Dir(cfg), "rules", "r.toml") + ":4: "
	if code != 2 || out != "" || !strings.Contains(errs, want) || !strings.Contains(errs, "topik") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 2 and %s...topik", code, out, errs, want)
	}
	code, _, errs = runRoute(t, filepath.Join(t.TempDir(), "missing.toml"), "mqtt", "a/b")
	if code != 2 || !strings.Contains(errs, "no such file") {
		t.Fatalf("missing config: exit %d, stderr %q", code, errs)
	}
}

// TestRouteOverMaxPayload: a payload over mqtt.max_payload is not routed,
// as the running bridge refuses it: a push is answered 4.13 at its first
// block (a limit hit, not a rule error), a publish for a resource rule is
// not kept; a publish within the limit is kept with no error. A large
// payload is not printed.
func TestRouteOverMaxPayload(t *testing.T) {
	cfg := routeSetup(t, routeRules)
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("a"), 300000), 0o600); err != nil {
		t.Fatal(err)
	}
	v := routeJSONOut(t, cfg, 1, "coap", "POST", "/telemetry/a/b", "-f", big)
	if at(t, v, "code") != "4.13 Request Entity Too Large" || at(t, v, "reason") != nil ||
		!strings.Contains(at(t, v, "error").(string), `bridge_coap_limit_hits_total{limit="block1_size"}`) {
		t.Fatalf("push over max_payload: %v", v)
	}
	v = routeJSONOut(t, cfg, 1, "mqtt", "config/d1", "-f", big)
	if at(t, v, "routed") != false || !strings.Contains(at(t, v, "error").(string), "payload too large") || at(t, v, "resources") == nil {
		t.Fatalf("publish over max_payload: %v", v)
	}
	v = routeJSONOut(t, cfg, 0, "mqtt", "config/d1", "-p", "small")
	if at(t, v, "routed") != true || at(t, v, "error") != nil {
		t.Fatalf("publish kept by a resource rule: %v", v)
	}
	code, out, _ := runRoute(t, cfg, "coap", "POST", "/telemetry/a/b", "-f", big)
	if code != 1 || !strings.Contains(out, "(300000 bytes, not shown)") || len(out) > 4096 {
		t.Fatalf("text report: exit %d, %d bytes:\n%.500s", code, len(out), out)
	}
}
