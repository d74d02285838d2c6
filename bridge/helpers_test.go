package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// testBridge is a bridge running in-process with an embedded broker on a
// loopback port, a CoAP server on a loopback port and the given rules.
type testBridge struct {
	*Bridge
	cancel   context.CancelFunc
	done     chan error
	dir      string
	label    string // pprof label of the goroutines Run starts
	warnings *warnRecorder
}

// useRemoteBroker points c at the broker at addr (host:port) with a client
// ID of its own, made from name, and no embedded broker.
func useRemoteBroker(c *Config, addr, name string) {
	c.MQTT.Broker = "tcp://" + addr
	c.MQTT.ClientID = fmt.Sprintf("%s-%d", name, time.Now().UnixNano())
	c.MQTT.Embedded.Listen = ""
}

// ruleFileConfig writes rulesText to a rule file in a new folder and
// returns a config using it, with every listener on a free loopback port.
func ruleFileConfig(t *testing.T, rulesText string) (Config, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.toml"), []byte(rulesText), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.File = filepath.Join(dir, "config.toml")
	cfg.Rules = []string{"rules.toml"}
	cfg.CoAP.Listen = "127.0.0.1:0"
	cfg.MQTT.Embedded.Listen = "127.0.0.1:0"
	cfg.HTTP.Listen = "127.0.0.1:0"
	return cfg, dir
}

// startBridge writes rulesText to a rule file and runs a bridge on it.
func startBridge(t *testing.T, rulesText string, mod func(*Config, *Options)) *testBridge {
	t.Helper()
	cfg, dir := ruleFileConfig(t, rulesText)
	opts := Options{
		PublishTimeout:  2 * time.Second,
		CommandQueueTTL: 10 * time.Second,
		CoAP:            coapside.EndpointOptions{AckTimeout: 100 * time.Millisecond, MaxRetransmit: 2},
	}
	if mod != nil {
		mod(&cfg, &opts)
	}
	warnings := newWarnRecorder(slog.NewTextHandler(testkit.LogWriter{TB: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := NewWithOptions(cfg, opts, slog.New(warnings))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb := &testBridge{Bridge: b, cancel: cancel, done: make(chan error, 1), dir: dir, warnings: warnings}
	tb.label = fmt.Sprintf("%s/%d", t.Name(), time.Now().UnixNano())
	go pprof.Do(ctx, pprof.Labels(runLabel, tb.label), func(ctx context.Context) { tb.done <- b.Run(ctx) })
	t.Cleanup(func() { tb.stop(t) })
	testkit.Eventually(t, 5*time.Second, "bridge ready", func() bool {
		return b.Ready() && (cfg.CoAP.Listen == "" || b.CoAPAddr() != nil) && (cfg.HTTP.Listen == "" || b.HTTPAddr() != nil)
	})
	return tb
}

func (tb *testBridge) stop(t *testing.T) {
	tb.cancel()
	select {
	case err := <-tb.done:
		if err != nil {
			t.Errorf("bridge Run: %v", err)
		}
		tb.done <- nil // let a second stop return at once
		checkRunGoroutines(t, tb.label)
	case <-time.After(ShutdownGrace + 2*time.Second):
		t.Error("bridge did not stop in time")
	}
}

// coapURL is the URL of path on the bridge's CoAP server.
func (tb *testBridge) coapURL(path string) string {
	return "coap://" + tb.CoAPAddr().String() + path
}

// subscriber is an external MQTT client collecting messages.
type subscriber struct {
	c    paho.Client
	mu   sync.Mutex
	msgs []paho.Message
	ch   chan paho.Message
}

func subscribe(t *testing.T, broker, filter string, qos byte) *subscriber {
	t.Helper()
	s := &subscriber{ch: make(chan paho.Message, 1000)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(fmt.Sprintf("sub-%d", time.Now().UnixNano()))
	s.c = paho.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %s: %v", broker, tok.Error())
	}
	tok := s.c.Subscribe(filter, qos, func(_ paho.Client, m paho.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
		s.ch <- m
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(100) })
	return s
}

// next waits for the next message.
func (s *subscriber) next(t *testing.T, d time.Duration) paho.Message {
	t.Helper()
	select {
	case m := <-s.ch:
		return m
	case <-time.After(d):
		t.Fatalf("no MQTT message within %v", d)
		return nil
	}
}

// none asserts that no message arrives within d.
func (s *subscriber) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-s.ch:
		t.Fatalf("unexpected MQTT message on %s: %q", m.Topic(), m.Payload())
	case <-time.After(d):
	}
}

func publish(t *testing.T, broker, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano()))
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Publish(topic, qos, retain, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

func newCoAPClient(t *testing.T) *coapside.Client {
	t.Helper()
	c, err := coapside.NewClient(coapside.ClientOptions{LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newReq(method message.Code, url string, payload []byte) (*coapside.Request, error) {
	return coapside.NewRequest(method, url, payload)
}

// waitFor reads messages until one on topic carries payload; earlier ones
// (a value published before the test looked) are skipped.
func (s *subscriber) waitFor(t *testing.T, d time.Duration, topic, payload string) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-s.ch:
			if m.Topic() == topic && string(m.Payload()) == payload {
				return
			}
		case <-deadline:
			t.Fatalf("no %q on %s within %v", payload, topic, d)
		}
	}
}

// runLabel is the pprof label a test gives the goroutine that calls Run:
// every goroutine Run starts, and every goroutine those start, inherit it.
const runLabel = "bridge-run"

// checkRunGoroutines fails the test when goroutines started by the Run
// labelled label are still alive (a second after Run returned, the time a
// goroutine that has signalled its end needs to exit).
func checkRunGoroutines(t *testing.T, label string) {
	t.Helper()
	var left []string
	deadline := time.Now().Add(time.Second)
	for {
		left = runGoroutines(label)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("%d goroutines started by Run outlive it:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// runGoroutines returns the stacks of the live goroutines labelled label.
func runGoroutines(label string) []string {
	var sb strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&sb, 1)
	want := fmt.Sprintf("%q:%q", runLabel, label)
	var out []string
	for _, g := range strings.Split(sb.String(), "\n\n") {
		if strings.Contains(g, "# labels: {") && strings.Contains(g, want) {
			out = append(out, g)
		}
	}
	return out
}

// warnRecorder is a slog handler that keeps the messages logged at Warn
// and above, with their attributes, and passes every record on.
type warnRecorder struct {
	slog.Handler
	attrs []slog.Attr // from WithAttrs
	mu    *sync.Mutex
	msgs  *[]string
}

func (h *warnRecorder) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		var sb strings.Builder
		sb.WriteString(r.Level.String() + " " + r.Message)
		add := func(a slog.Attr) bool {
			sb.WriteString(" " + a.String())
			return true
		}
		for _, a := range h.attrs {
			add(a)
		}
		r.Attrs(add)
		h.mu.Lock()
		*h.msgs = append(*h.msgs, sb.String())
		h.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h *warnRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &warnRecorder{Handler: h.Handler.WithAttrs(as), attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], as...), mu: h.mu, msgs: h.msgs}
}

func (h *warnRecorder) WithGroup(name string) slog.Handler {
	return &warnRecorder{Handler: h.Handler.WithGroup(name), attrs: h.attrs, mu: h.mu, msgs: h.msgs}
}

func newWarnRecorder(next slog.Handler) *warnRecorder {
	return &warnRecorder{Handler: next, mu: &sync.Mutex{}, msgs: &[]string{}}
}

// logged returns the messages recorded so far.
func (h *warnRecorder) logged() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), *h.msgs...)
}
