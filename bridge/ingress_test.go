package bridge

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/rules"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const ingressRules = `
[[ingress]]
name    = "telemetry"
path    = "/telemetry/{device}/{metric}"
methods = ["POST", "PUT"]
topic   = "sensors/{device}/{metric}"
qos     = 1

[[ingress]]
name    = "json"
path    = "/json/{device}"
methods = ["POST"]
topic   = "json/{device}"
payload = "json"

[[ingress]]
name      = "hot"
path      = "/hot/{device}"
methods   = ["POST"]
topic     = "hot/{device}"
payload   = "json"
where     = "payload.temp > 30"
transform = "{'device': device, 'celsius': payload.temp}"
`

func TestIngressPublishesAndAnswers(t *testing.T) {
	tb := startBridge(t, ingressRules, nil)
	sub := subscribe(t, tb.MQTTAddr(), "#", 1)
	c := newCoAPClient(t)
	ctx := context.Background()

	resp, err := c.Post(ctx, tb.coapURL("/telemetry/dev1/temp"), message.TextPlain, []byte("21.5"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != message.Changed {
		t.Fatalf("code %v, want 2.04", resp.Code)
	}
	m := sub.next(t, 5*time.Second)
	if m.Topic() != "sensors/dev1/temp" || string(m.Payload()) != "21.5" || m.Qos() != 1 {
		t.Fatalf("got %s %q qos %d", m.Topic(), m.Payload(), m.Qos())
	}
	if got := testutil.ToFloat64(tb.metrics.messages.WithLabelValues("telemetry", dirCoAPToMQTT)); got != 1 {
		t.Errorf("messages metric %v, want 1", got)
	}

	// PUT is allowed too.
	if resp, err = c.Put(ctx, tb.coapURL("/telemetry/dev2/hum"), message.TextPlain, []byte("40")); err != nil || resp.Code != message.Changed {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	if m := sub.next(t, 5*time.Second); m.Topic() != "sensors/dev2/hum" {
		t.Fatalf("topic %s", m.Topic())
	}
}

func TestIngressJSONConversion(t *testing.T) {
	tb := startBridge(t, ingressRules, nil)
	sub := subscribe(t, tb.MQTTAddr(), "json/#", 0)
	c := newCoAPClient(t)
	ctx := context.Background()

	// CBOR {"t": 21} -> JSON.
	cbor := []byte{0xa1, 0x61, 't', 0x15}
	resp, err := c.Post(ctx, tb.coapURL("/json/d1"), message.AppCBOR, cbor)
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("POST cbor: %v %v", resp, err)
	}
	var v map[string]any
	if m := sub.next(t, 5*time.Second); json.Unmarshal(m.Payload(), &v) != nil || v["t"] != 21.0 {
		t.Fatalf("payload %q", m.Payload())
	}

	// text number -> JSON number.
	if resp, err = c.Post(ctx, tb.coapURL("/json/d1"), message.TextPlain, []byte("7")); err != nil || resp.Code != message.Changed {
		t.Fatalf("POST text: %v %v", resp, err)
	}
	if m := sub.next(t, 5*time.Second); string(m.Payload()) != "7" {
		t.Fatalf("payload %q", m.Payload())
	}

	// Bytes that are not CBOR: 4.15, counted, nothing published.
	resp, err = c.Post(ctx, tb.coapURL("/json/d1"), message.AppCBOR, []byte{0xff, 0x00, 0x13})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != message.UnsupportedContentFormat {
		t.Fatalf("code %v, want 4.15", resp.Code)
	}
	// The diagnostic payload (RFC 7252 §5.5.2) says why, not only which
	// metric counted it.
	if diag := string(resp.Payload); !strings.HasPrefix(diag, reasonConvert+": ") || !strings.Contains(diag, rules.ErrConvert.Error()) {
		t.Errorf("diagnostic %q, want the reason and the conversion error", diag)
	}
	sub.none(t, 200*time.Millisecond)
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("json", reasonConvert)); got != 1 {
		t.Errorf("convert errors %v, want 1", got)
	}
}

func TestIngressWhereAndTransform(t *testing.T) {
	tb := startBridge(t, ingressRules, nil)
	sub := subscribe(t, tb.MQTTAddr(), "hot/#", 0)
	c := newCoAPClient(t)
	ctx := context.Background()

	resp, err := c.Post(ctx, tb.coapURL("/hot/d9"), message.AppJSON, []byte(`{"temp": 12}`))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("filtered POST: %v %v", resp, err)
	}
	sub.none(t, 200*time.Millisecond)
	if got := testutil.ToFloat64(tb.metrics.filtered.WithLabelValues("hot")); got != 1 {
		t.Errorf("filtered %v, want 1", got)
	}

	if resp, err = c.Post(ctx, tb.coapURL("/hot/d9"), message.AppJSON, []byte(`{"temp": 35.5}`)); err != nil || resp.Code != message.Changed {
		t.Fatalf("POST: %v %v", resp, err)
	}
	var v map[string]any
	m := sub.next(t, 5*time.Second)
	if err := json.Unmarshal(m.Payload(), &v); err != nil || v["device"] != "d9" || v["celsius"] != 35.5 {
		t.Fatalf("transformed payload %q", m.Payload())
	}
}

func TestIngressErrors(t *testing.T) {
	tb := startBridge(t, ingressRules, nil)
	sub := subscribe(t, tb.MQTTAddr(), "#", 0)
	c := newCoAPClient(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		method message.Code
		path   string
		want   message.Code
	}{
		{"unmatched path", message.POST, "/nothing/here", message.NotFound},
		{"too short", message.POST, "/telemetry/dev1", message.NotFound},
		{"method not allowed", message.GET, "/telemetry/dev1/temp", message.MethodNotAllowed},
		{"DELETE not allowed", message.DELETE, "/json/d1", message.MethodNotAllowed},
		{"capture escapes its level", message.POST, "/telemetry/a%2Bb/temp", message.BadRequest},
		{"hash in capture", message.POST, "/telemetry/%23/temp", message.BadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var payload []byte
			if tt.method == message.POST {
				payload = []byte("1")
			}
			req, err := newReq(tt.method, tb.coapURL(tt.path), payload)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != tt.want {
				t.Fatalf("code %v, want %v", resp.Code, tt.want)
			}
		})
	}
	sub.none(t, 200*time.Millisecond)
}

// TestIngressDuplicateCONPublishedOnce sends the same confirmable message
// twice, as a device does when an ACK is lost: one publish, two answers.
func TestIngressDuplicateCONPublishedOnce(t *testing.T) {
	tb := startBridge(t, ingressRules, nil)
	sub := subscribe(t, tb.MQTTAddr(), "sensors/#", 1)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	m := &message.Message{Type: message.Confirmable, Code: message.POST, MessageID: 0x1234, Token: []byte{1, 2, 3, 4}, Payload: []byte("5")}
	m.Options = m.Options.SetPath("/telemetry/dup/x")
	wire, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for i := 0; i < 2; i++ {
		if _, err := conn.WriteTo(wire, tb.CoAPAddr()); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		ack, err := message.Decode(buf[:n])
		if err != nil || ack.Type != message.Acknowledgement || ack.MessageID != 0x1234 || ack.Code != message.Changed {
			t.Fatalf("answer %d: %+v %v", i, ack, err)
		}
	}
	if got := sub.next(t, 5*time.Second); !strings.HasPrefix(got.Topic(), "sensors/dup/") {
		t.Fatalf("topic %s", got.Topic())
	}
	sub.none(t, 300*time.Millisecond)
}

// TestIngressNoResponseLibcoap pushes with libcoap's coap-client carrying
// No-Response (RFC 7967): the push is published and the classes it
// declines are not answered, while a class it did not decline is.
func TestIngressNoResponseLibcoap(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	tb := startBridge(t, ingressRules, nil)
	sub := subscribe(t, tb.MQTTAddr(), "sensors/#", 1)
	coapClient := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		// -B 1: the client waits one second for an answer that never comes.
		out, err := exec.CommandContext(ctx, client, append([]string{"-B", "1"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// 0x1a = 26: no 2.xx, 4.xx or 5.xx.
	if out := coapClient("-N", "-O", "258,0x1a", "-m", "post", "-e", "7", tb.coapURL("/telemetry/nr/temp")); out != "" {
		t.Errorf("NON POST with No-Response 26 answered: %q", out)
	}
	if m := sub.next(t, 5*time.Second); m.Topic() != "sensors/nr/temp" || string(m.Payload()) != "7" {
		t.Fatalf("published %s %q", m.Topic(), m.Payload())
	}
	// 0x08: no 4.xx; an unmatched path is then silent.
	if out := coapClient("-N", "-O", "258,0x08", "-m", "post", "-e", "x", tb.coapURL("/nowhere")); out != "" {
		t.Errorf("NON POST to an unmatched path with No-Response 8 answered: %q", out)
	}
	// 0x02: no 2.xx, but the 4.04 is wanted.
	if out := coapClient("-N", "-O", "258,0x02", "-m", "post", "-e", "x", tb.coapURL("/nowhere")); !strings.Contains(out, "4.04") {
		t.Errorf("NON POST to an unmatched path with No-Response 2: %q, want 4.04", out)
	}
}

// TestIngressCapturesCannotCollide pushes to path = "/up/{rest...}": a
// Uri-Path segment that would change the topic's levels ("a/b" would read
// as the two segments "a" and "b"; "+", "#", an empty segment, NUL) is
// refused with 4.00 and counted, nothing is published, and a request too
// large to read is answered 4.13 rather than ignored.
func TestIngressCapturesCannotCollide(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	tb := startBridge(t, `
[[ingress]]
name  = "up"
path  = "/up/{rest...}"
topic = "up/{rest...}"
`, nil)
	sub := subscribe(t, tb.MQTTAddr(), "up/#", 1)
	c := newCoAPClient(t)
	post := func(segs ...string) *coapside.Response {
		t.Helper()
		req, err := newReq(message.POST, tb.coapURL("/"), []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		req.Options = req.Options.Del(message.URIPath)
		for _, s := range segs {
			req.Options = req.Options.AddString(message.URIPath, s)
		}
		resp, err := c.Do(t.Context(), req)
		if err != nil {
			t.Fatalf("POST %d segments %q: %v", len(segs), segs[:min(len(segs), 3)], err)
		}
		return resp
	}
	bad := [][]string{{"up", "a/b"}, {"up", "a", "b/c"}, {"up", "a+b"}, {"up", "#"}, {"up", "a", ""}, {"up", "a\x00b"}, {"up", ".."}}
	for _, segs := range bad {
		if resp := post(segs...); resp.Code != message.BadRequest {
			t.Errorf("POST %q: %v, want 4.00", segs, resp.Code)
		}
	}
	// Errors of the rule whose path took them (its row on the status page).
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("up", reasonEscape)); got != float64(len(bad)) {
		t.Errorf("escape errors of up %v, want %d", got, len(bad))
	}
	// libcoap sends a%2Fb as the one segment "a/b".
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, client, "-m", "post", "-e", "x", tb.coapURL("/up/a%2Fb")).CombinedOutput()
	if !strings.Contains(string(out), "4.00") {
		t.Errorf("coap-client POST /up/a%%2Fb: %q, want 4.00", out)
	}

	if resp := post("up", "a", "b"); resp.Code != message.Changed {
		t.Fatalf("POST /up/a/b: %v", resp.Code)
	}
	if m := sub.next(t, 5*time.Second); m.Topic() != "up/a/b" {
		t.Fatalf("published %s, want up/a/b only", m.Topic())
	}

	// A thousand segments do not fit a datagram the bridge reads.
	segs := make([]string, 1000)
	for i := range segs {
		segs[i] = "s"
	}
	segs[0] = "up"
	if resp := post(segs...); resp.Code != message.RequestEntityTooLarge {
		t.Errorf("POST with 1000 segments: %v, want 4.13", resp.Code)
	}
	sub.none(t, 200*time.Millisecond)
}

// TestIngressConditionalPush: a push target has no current representation
// (RFC 7252 §5.10.8): a push with If-Match is not made (4.12, counted); one
// with If-None-Match is.
func TestIngressConditionalPush(t *testing.T) {
	tb := startBridge(t, ingressRules, nil)
	sub := subscribe(t, tb.MQTTAddr(), "sensors/#", 1)
	c := newCoAPClient(t)
	push := func(opt message.OptionID, val []byte) message.Code {
		t.Helper()
		req, err := newReq(message.PUT, tb.coapURL("/telemetry/d1/t"), []byte("1"))
		if err != nil {
			t.Fatal(err)
		}
		req.Options = req.Options.Add(opt, val)
		resp, err := c.Do(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Code
	}
	if code := push(message.IfMatch, []byte{1, 2}); code != message.PreconditionFailed {
		t.Fatalf("If-Match with an ETag: %v, want 4.12", code)
	}
	if code := push(message.IfMatch, nil); code != message.PreconditionFailed {
		t.Fatalf("If-Match empty (exists): %v, want 4.12", code)
	}
	sub.none(t, 200*time.Millisecond)
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("telemetry", reasonPrecondition)); got != 2 {
		t.Errorf("precondition errors %v, want 2", got)
	}
	if code := push(message.IfNoneMatch, nil); code != message.Changed {
		t.Fatalf("If-None-Match: %v, want 2.04", code)
	}
	sub.waitFor(t, 5*time.Second, "sensors/d1/t", "1")
}
