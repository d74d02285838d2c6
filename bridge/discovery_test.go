package bridge

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/coap-mqtt/bridge/rules"
)

const discoveryRules = `
[[resource]]
name           = "config"
path           = "/config/{device}"
topic          = "config/{device}"
content_format = "json"
rt             = "config"
if             = "core.rp"

[[resource]]
name  = "status"
path  = "/status/{device}"
topic = "status/{device}"

[[resource]]
name     = "private"
path     = "/private/{device}"
topic    = "private/{device}"
identity = "{device}"

[[ingress]]
name  = "telemetry"
path  = "/telemetry/{device}/{metric}"
topic = "sensors/{device}/{metric}"
rt    = "telemetry"
if    = "core.p"

[[ingress]]
name  = "undescribed"
path  = "/plain/{device}"
topic = "plain/{device}"
`

// TestWellKnownCore reads the bridge's /.well-known/core (RFC 6690) with
// libcoap's coap-client and the bridge's client: resource rule paths that
// hold a value, with obs, ct, rt and if, the ingress rules the operator
// described, and query filters (§4.1) applied by the server. A path only
// an authenticated device may read is not listed to plain CoAP.
func TestWellKnownCore(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	pskFile := filepath.Join(t.TempDir(), "psk.toml")
	if err := os.WriteFile(pskFile, []byte("[[psk]]\nidentity = \"dev1\"\nkey = \"secret-1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, discoveryRules, func(c *Config, _ *Options) {
		// The identity rule needs a coaps listener to be valid.
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
	})
	c := newCoAPClient(t)
	get := func(query string) (message.Code, string) {
		t.Helper()
		u := tb.coapURL("/.well-known/core")
		if query != "" {
			u += "?" + query
		}
		resp, err := c.Get(t.Context(), u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		if resp.Code == message.Content {
			if cf, ok := resp.Options.ContentFormat(); !ok || uint16(cf) != linkformat.ContentFormat {
				t.Errorf("GET %s: Content-Format %v %v, want 40", u, cf, ok)
			}
		}
		return resp.Code, string(resp.Payload)
	}
	const telemetry = `</telemetry/{device}/{metric}>;rt="telemetry";if="core.p"`
	if code, doc := get(""); code != message.Content || doc != telemetry {
		t.Fatalf("before any value: %v %q, want %q", code, doc, telemetry)
	}

	// First, so it is in the cache when the others are seen.
	publish(t, tb.MQTTAddr(), "private/d1", 1, false, `only for d1`) // not for plain CoAP
	publish(t, tb.MQTTAddr(), "config/d2", 1, false, `{"n":2}`)
	publish(t, tb.MQTTAddr(), "config/d1", 1, false, `{"n":1}`)
	publish(t, tb.MQTTAddr(), "status/s1", 1, false, `up`)
	publish(t, tb.MQTTAddr(), "unrelated/x", 1, false, `x`)
	want := `</config/d1>;rt="config";if="core.rp";ct=50;obs,` +
		`</config/d2>;rt="config";if="core.rp";ct=50;obs,` +
		`</status/s1>;obs,` + telemetry
	var doc string
	testkit.Eventually(t, 5*time.Second, "every value listed", func() bool {
		_, doc = get("")
		return doc == want
	})

	// The same document as libcoap reads it.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, client, "-m", "get", tb.coapURL("/.well-known/core")).CombinedOutput()
	if err != nil {
		t.Fatalf("coap-client: %v: %s", err, out)
	}
	links, err := linkformat.Parse([]byte(strings.TrimSpace(string(out))))
	if err != nil || len(links) != 4 || links[0].Target != "/config/d1" || !links[0].Has("obs") {
		t.Fatalf("coap-client read %q: %v %v", out, links, err)
	}

	for _, tt := range []struct{ query, want string }{
		{"rt=config", `</config/d1>;rt="config";if="core.rp";ct=50;obs,</config/d2>;rt="config";if="core.rp";ct=50;obs`},
		{"href=/status/*", `</status/s1>;obs`},
		{"if=core.p", telemetry},
		{"ct=50", `</config/d1>;rt="config";if="core.rp";ct=50;obs,</config/d2>;rt="config";if="core.rp";ct=50;obs`},
		{"href=/config/d2", `</config/d2>;rt="config";if="core.rp";ct=50;obs`},
		{"rt=nothing", ``},
	} {
		if code, doc := get(tt.query); code != message.Content || doc != tt.want {
			t.Errorf("?%s: %v %q, want %q", tt.query, code, doc, tt.want)
		}
	}
	if code, _ := get("rt=a*b"); code != message.BadRequest {
		t.Errorf("malformed filter: %v, want 4.00", code)
	}
	resp, err := c.Post(t.Context(), tb.coapURL("/.well-known/core"), message.TextPlain, []byte("x"))
	if err != nil || resp.Code != message.MethodNotAllowed {
		t.Errorf("POST /.well-known/core: %v %v, want 4.05", resp, err)
	}
}

// TestIngressLinkPath: an ingress rule is listed by its path as written; the
// capture identity = "{capture}" binds is filled in for an authenticated
// device, unless its identity could not stand as one segment.
func TestIngressLinkPath(t *testing.T) {
	set, err := rules.Parse(rules.Source{Name: "t.toml", Data: []byte(`
[[ingress]]
name     = "events"
path     = "/events/{device}/{kind}/{rest...}"
topic    = "events/{device}/{kind}/{rest...}"
identity = "{device}"
rt       = "event"
`)})
	if err != nil {
		t.Fatal(err)
	}
	in := set.Ingress[0]
	for _, tt := range []struct{ identity, want string }{
		{"", "/events/{device}/{kind}/{rest...}"},
		{"door-7", "/events/door-7/{kind}/{rest...}"},
		{"a b", "/events/a%20b/{kind}/{rest...}"},
		{"a/b", "/events/{device}/{kind}/{rest...}"},
	} {
		if got := ingressLinkPath(in, tt.identity); got != tt.want {
			t.Errorf("identity %q: %s, want %s", tt.identity, got, tt.want)
		}
	}
}
