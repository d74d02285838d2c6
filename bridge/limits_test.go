package bridge

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/prometheus/client_golang/prometheus"
)

// limitHits reads bridge_coap_limit_hits_total{limit=name}; -1 when absent.
func limitHits(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "bridge_coap_limit_hits_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limit" && l.GetValue() == name {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

// exchange sends m from conn to the bridge and returns the answer.
func exchange(t *testing.T, conn *net.UDPConn, m *message.Message) *message.Message {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no answer to %v: %v", m, err)
	}
	r, err := message.Decode(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// block1 is a PUT carrying block num of a Block1 upload of 1024-byte
// blocks to path; size1 > 0 adds Size1.
func block1(path string, mid uint16, num uint32, more bool, size1 uint32) *message.Message {
	m := &message.Message{Type: message.Confirmable, Code: message.PUT, MessageID: mid, Token: []byte{byte(mid)}, Payload: make([]byte, 1024)}
	v, _ := block.Option{Num: num, More: more, SZX: 6}.Value()
	m.Options = m.Options.SetPath(path).SetUint(message.Block1, v)
	if size1 > 0 {
		m.Options = m.Options.SetUint(message.Size1, size1)
	}
	return m
}

func dialBridge(t *testing.T, tb *testBridge) *net.UDPConn {
	t.Helper()
	conn, err := net.DialUDP("udp", nil, tb.CoAPAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestCoAPLimitsBlock1: a Block1 upload is bounded by mqtt.max_payload: a
// first block announcing more in Size1 is answered at once with 4.13 and
// Size1 = the limit (RFC 7959 §2.9.3, §4), and so is the block that grows
// an upload without Size1 past it; coap.limits bounds the uploads of one
// source address. Each refusal is counted by limit.
func TestCoAPLimitsBlock1(t *testing.T) {
	const maxPayload = 4096
	tb := startBridge(t, ingressRules, func(c *Config, _ *Options) {
		c.MQTT.MaxPayload = maxPayload
		c.CoAP.Limits.Block1TransfersPerSource = 2
	})
	conn := dialBridge(t, tb)
	r := exchange(t, conn, block1("/telemetry/d1/t", 1, 0, true, 1_000_000))
	if r.Code != message.RequestEntityTooLarge {
		t.Fatalf("first block with Size1 1 MB answered %v", r)
	}
	if s1, err := r.Options.Uint(message.Size1); err != nil || s1 != maxPayload {
		t.Errorf("4.13 with Size1 %d (%v), want %d", s1, err, maxPayload)
	}
	// Without Size1: the block that passes the limit gets 4.13.
	for num := range uint32(4) {
		if r := exchange(t, conn, block1("/telemetry/d1/t", uint16(10+num), num, true, 0)); r.Code != message.Continue {
			t.Fatalf("block %d answered %v", num, r)
		}
	}
	if r := exchange(t, conn, block1("/telemetry/d1/t", 20, 4, true, 0)); r.Code != message.RequestEntityTooLarge {
		t.Errorf("block past mqtt.max_payload answered %v", r)
	}
	if got := limitHits(t, tb.reg, "block1_size"); got != 2 {
		t.Errorf("block1_size hits %v, want 2", got)
	}
	// Two uploads in progress from this address, a third refused.
	for i, want := range []message.Code{message.Continue, message.Continue, message.ServiceUnavailable} {
		c := dialBridge(t, tb)
		if r := exchange(t, c, block1("/telemetry/d2/t", uint16(30+i), 0, true, 0)); r.Code != want {
			t.Errorf("upload %d answered %v, want %v", i, r, want)
		}
	}
	if got := limitHits(t, tb.reg, "block1_transfers_per_source"); got != 1 {
		t.Errorf("block1_transfers_per_source hits %v, want 1", got)
	}
}

// TestCoAPLimitsBlock1Libcoap: libcoap's client uploading a body larger
// than mqtt.max_payload block-wise is refused with 4.13 instead of
// sending every block.
func TestCoAPLimitsBlock1Libcoap(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	const maxPayload = 4096
	tb := startBridge(t, ingressRules, func(c *Config, _ *Options) { c.MQTT.MaxPayload = maxPayload })
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, []byte(strings.Repeat("x", 64<<10)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, client, "-m", "put", "-b", "1024", "-f", file, "-B", "10",
		tb.coapURL("/telemetry/d1/t")).CombinedOutput()
	t.Logf("coap-client: %s", out)
	if got := limitHits(t, tb.reg, "block1_size"); got < 1 {
		t.Errorf("block1_size hits %v: the upload was not refused by mqtt.max_payload", got)
	}
	if !strings.Contains(string(out), "4.13") {
		t.Errorf("coap-client did not report 4.13")
	}
	// Refused at the first block, not after the 64 blocks of the body.
	if got := counterValue(t, tb.reg, "bridge_coap_received_total"); got > 4 {
		t.Errorf("the bridge received %v datagrams of the upload", got)
	}
}

// TestCoAPLimitsObserversPerSource: coap.limits.observers_per_source
// bounds one address's observers of resource rules; beyond it the
// registration is answered without Observe and counted.
func TestCoAPLimitsObserversPerSource(t *testing.T) {
	tb := startBridge(t, resourceRules, func(c *Config, _ *Options) { c.CoAP.Limits.ObserversPerSource = 1 })
	publish(t, tb.MQTTAddr(), "config/d1", 1, false, "v0")
	c := newCoAPClient(t)
	testkit.Eventually(t, 5*time.Second, "first value", func() bool {
		resp, err := c.Get(t.Context(), tb.coapURL("/config/d1"))
		return err == nil && resp.Code == message.Content
	})
	first := observeRaw(t, tb.CoAPAddr(), "/config/d1", []byte{1}).next()
	if _, ok := first.Options.Observe(); !ok {
		t.Fatalf("first registration refused: %v", first)
	}
	second := observeRaw(t, tb.CoAPAddr(), "/config/d1", []byte{2}).next()
	if _, ok := second.Options.Observe(); ok || second.Code != message.Content {
		t.Errorf("second registration from the same address answered %v", second)
	}
	if got := limitHits(t, tb.reg, "observers_per_source"); got != 1 {
		t.Errorf("observers_per_source hits %v, want 1", got)
	}
}

// TestCoAPLimitsHandlersPerSource: coap.limits.handlers_per_source
// reaches the CoAP server (0 means the default share) and its refusals are
// exported under their own limit label.
func TestCoAPLimitsHandlersPerSource(t *testing.T) {
	tb := startBridge(t, ingressRules, func(c *Config, _ *Options) { c.CoAP.Limits.HandlersPerSource = 3 })
	if got := tb.coap.srv.Options.MaxConcurrentPerSource; got != 3 {
		t.Errorf("server's handlers per source %d, want 3", got)
	}
	if got := limitHits(t, tb.reg, "handlers_per_source"); got != 0 {
		t.Errorf("handlers_per_source hits %v, want 0 (exported)", got)
	}
	def := startBridge(t, ingressRules, nil)
	if got := def.coap.srv.Options.MaxConcurrentPerSource; got != DefaultHandlersPerSource {
		t.Errorf("default handlers per source %d, want %d", got, DefaultHandlersPerSource)
	}
}

// TestCoAPHandlersPerSourceWithHungBroker: with a broker that stopped
// answering, every confirmable QoS 1 push holds a handler until
// PublishTimeout. One source holds at most coap.limits.handlers_per_source
// of them: its next CON gets 5.03 with Max-Age at once, counted, and
// another source's request is still handled.
func TestCoAPHandlersPerSourceWithHungBroker(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	tb := startBridge(t, ingressRules, func(c *Config, o *Options) {
		useRemoteBroker(c, broker.Addr(), "bridge-handlers-per-source")
		c.CoAP.Limits.HandlersPerSource = 2
		o.PublishTimeout = 3 * time.Second
	})
	broker.Pause()
	a := dialBridge(t, tb)
	push := func(mid uint16) {
		m := &message.Message{Type: message.Confirmable, Code: message.POST, MessageID: mid, Token: []byte{byte(mid)}, Payload: []byte("21")}
		m.Options = m.Options.SetPath("/telemetry/a/t")
		b, _ := m.MarshalBinary()
		if _, err := a.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	push(1)
	push(2)
	// Both wait for the broker: the bridge acknowledges them empty.
	waitFor := func(want func(*message.Message) bool) *message.Message {
		t.Helper()
		buf := make([]byte, 1500)
		deadline := time.Now().Add(5 * time.Second)
		for {
			_ = a.SetReadDeadline(deadline)
			n, err := a.Read(buf)
			if err != nil {
				t.Fatalf("waiting: %v", err)
			}
			m, err := message.Decode(buf[:n])
			if err == nil && want(m) {
				return m
			}
		}
	}
	acked := map[uint16]bool{}
	waitFor(func(m *message.Message) bool {
		if m.Type == message.Acknowledgement && m.Code == message.Empty {
			acked[m.MessageID] = true
		}
		return len(acked) == 2
	})
	push(3)
	r := waitFor(func(m *message.Message) bool { return m.MessageID == 3 })
	if r.Type != message.Acknowledgement || r.Code != message.ServiceUnavailable || !r.Options.Has(message.MaxAge) {
		t.Fatalf("a third request from the source got %v", r)
	}
	if got := limitHits(t, tb.reg, "handlers_per_source"); got != 1 {
		t.Errorf("handlers_per_source hits %v, want 1", got)
	}
	// Another source is handled meanwhile (an unknown path: 4.04 at once).
	b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2: %v", err)
	}
	defer b.Close()
	m := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: 9, Token: []byte{9}}
	m.Options = m.Options.SetPath("/nothing")
	wire, _ := m.MarshalBinary()
	if _, err := b.WriteTo(wire, tb.CoAPAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = b.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := b.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the other source got no answer: %v", err)
	}
	if got, err := message.Decode(buf[:n]); err != nil || got.Code != message.NotFound {
		t.Errorf("the other source got %v, %v", got, err)
	}
	// The held pushes are answered (separately) once PublishTimeout
	// passes: 5.03 when withdrawn, 2.04 when already handed to the
	// connection.
	answered := map[string]bool{}
	waitFor(func(m *message.Message) bool {
		if m.Code.IsResponse() && m.Type != message.Acknowledgement {
			answered[string(m.Token)] = true
		}
		return len(answered) == 2
	})
}
