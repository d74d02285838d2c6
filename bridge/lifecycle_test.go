package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// noPanic calls f and fails the test if it panics.
func noPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s panicked: %v", what, r)
		}
	}()
	f()
}

// checkIdle checks every exported method of a bridge that does not run.
func checkIdle(t *testing.T, b *Bridge, when string) {
	t.Helper()
	noPanic(t, "Reload "+when, func() {
		if err := b.Reload(t.Context()); !errors.Is(err, ErrNotRunning) {
			t.Errorf("Reload %s = %v, want ErrNotRunning", when, err)
		}
	})
	noPanic(t, "TriggerReload "+when, func() {
		b.TriggerReload()
		b.TriggerReload() // a second request while one is pending never blocks
	})
	noPanic(t, "Ready "+when, func() {
		if b.Ready() {
			t.Errorf("Ready %s = true", when)
		}
	})
	noPanic(t, "addresses "+when, func() {
		if a := b.HTTPAddr(); a != nil {
			t.Errorf("HTTPAddr %s = %v, want nil", when, a)
		}
		if a := b.CoAPAddr(); a != nil {
			t.Errorf("CoAPAddr %s = %v, want nil", when, a)
		}
		if a := b.DTLSAddr(); a != nil {
			t.Errorf("DTLSAddr %s = %v, want nil", when, a)
		}
		if a := b.MQTTAddr(); a != "" {
			t.Errorf("MQTTAddr %s = %q, want empty", when, a)
		}
	})
}

// TestBridgeMethodsOutsideRun: every exported method is safe on a bridge
// that New returned and Run has not started, and on one whose Run has
// returned; Run runs once.
func TestBridgeMethodsOutsideRun(t *testing.T) {
	cfg, _ := ruleFileConfig(t, ingressRules)
	b, err := NewWithOptions(cfg, Options{noFileWatch: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkIdle(t, b, "before Run")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	label := fmt.Sprintf("%s/%d", t.Name(), time.Now().UnixNano())
	go pprof.Do(ctx, pprof.Labels(runLabel, label), func(ctx context.Context) { done <- b.Run(ctx) })
	testkit.Eventually(t, 5*time.Second, "bridge ready", b.Ready)
	if b.HTTPAddr() == nil || b.CoAPAddr() == nil || b.MQTTAddr() == "" {
		t.Errorf("while running: addresses %v %v %q", b.HTTPAddr(), b.CoAPAddr(), b.MQTTAddr())
	}
	if err := b.Reload(t.Context()); err != nil {
		t.Errorf("Reload while running: %v", err)
	}
	if err := b.Run(ctx); !errors.Is(err, ErrAlreadyRun) {
		t.Errorf("a second Run while running = %v, want ErrAlreadyRun", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(ShutdownGrace + 2*time.Second):
		t.Fatal("Run did not return")
	}
	checkRunGoroutines(t, label)
	checkIdle(t, b, "after Run")
	if err := b.Run(context.Background()); !errors.Is(err, ErrAlreadyRun) {
		t.Errorf("Run after Run = %v, want ErrAlreadyRun", err)
	}
}

// TestCleanShutdownReportsNothing: a shutdown with nothing in progress
// returns nil and logs no warning, with both the UDP and the DTLS
// listener (their server's end is not an error).
func TestCleanShutdownReportsNothing(t *testing.T) {
	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk.toml")
	if err := os.WriteFile(pskFile, []byte("[[psk]]\nidentity = \"dev1\"\nkey = \"secret-1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, ingressRules, func(c *Config, _ *Options) {
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
	})
	tb.stop(t)
	if w := tb.warnings.logged(); len(w) > 0 {
		t.Errorf("a clean shutdown logged:\n%s", strings.Join(w, "\n"))
	}
}

// stuckPublisher stands for a broker that takes no message: Publish waits
// until its context ends, as mqttside's clients do.
type stuckPublisher struct{ entered chan string }

func (p *stuckPublisher) Publish(ctx context.Context, m mqttside.Message) error {
	select {
	case p.entered <- m.Topic:
	default:
	}
	<-ctx.Done()
	return fmt.Errorf("%w: %w", mqttside.ErrPending, ctx.Err())
}

func (p *stuckPublisher) PublishOrWithdraw(ctx context.Context, m mqttside.Message) error {
	return p.Publish(ctx, m)
}

// TestCommandsShutdownWaitsForWorkers: a worker publishing a command's
// outcome to a broker that takes nothing is cut short when the shutdown's
// deadline passes, and Shutdown returns only once the workers (and the
// probe of the device that did not answer) are gone.
func TestCommandsShutdownWaitsForWorkers(t *testing.T) {
	dead := peer.FreeUDPPort(t)
	dir := t.TempDir()
	rules := fmt.Sprintf(`
[[device]]
name = "dev1"
url  = "coap://127.0.0.1:%d"

[[command]]
name           = "actuators"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
qos            = 1
timeout        = "200ms"
`, dead)
	if err := os.WriteFile(filepath.Join(dir, "rules.toml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.File = filepath.Join(dir, "config.toml")
	cfg.Rules = []string{"rules.toml"}
	logger := slog.New(slog.NewTextHandler(testkit.LogWriter{TB: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := NewWithOptions(cfg, Options{PublishTimeout: time.Minute, CommandWorkers: 2}, logger)
	if err != nil {
		t.Fatal(err)
	}
	pub := &stuckPublisher{entered: make(chan string, 1)}
	label := fmt.Sprintf("%s/%d", t.Name(), time.Now().UnixNano())
	pprof.Do(t.Context(), pprof.Labels(runLabel, label), func(context.Context) {
		c := newCommands(&b.set, b.subs, pub, b.devices, b.metrics, logger, b.opts, maxPayload(cfg.MQTT))
		runDone := make(chan error, 1)
		go func() { runDone <- c.Run(context.Background()) }()
		c.ServeMQTT(&mqttside.Delivery{Message: mqttside.Message{Topic: "cmd/dev1/led", Payload: []byte("on"), QoS: 1}, Filter: "cmd/+/#"})
		select {
		case topic := <-pub.entered:
			if topic != "replies/dev1/led" {
				t.Fatalf("published to %s, want the outcome on replies/dev1/led", topic)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the command's outcome was never published")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
		b.devices.Close() // as the bridge does next; the workers made its client
	})
	checkRunGoroutines(t, label)
}

// TestShutdownDuringReloadThatEndsAnObservation: a reload removes the
// observation of a device that stopped answering, and waits for the deregistration the
// device never answers (RFC 7252 default timing: tens of seconds); a
// shutdown meanwhile still ends within ShutdownGrace.
func TestShutdownDuringReloadThatEndsAnObservation(t *testing.T) {
	dev := peer.StartCoapServerProcess(t)
	device := fmt.Sprintf(`
[[device]]
name = "dev0"
url  = "coap://%s"
`, dev.Addr)
	tb := startBridge(t, device+`
[[observe]]
name    = "time"
devices = ["dev0"]
paths   = ["/time"]
topic   = "time/{device}"
`, func(_ *Config, o *Options) {
		o.CoAP = coapside.EndpointOptions{} // RFC 7252 defaults
	})
	testkit.Eventually(t, 10*time.Second, "observing", func() bool { return testutil.ToFloat64(tb.metrics.observations) == 1 })
	run := tb.watchRun("observe dev0 /time")
	if run == nil {
		t.Fatal("no observation of dev0 /time")
	}
	dev.Kill()
	// The device's host stays up but swallows everything: a closed port
	// would answer with ICMP port unreachable and end the deregistration
	// at once.
	silent, err := net.ListenUDP("udp", dev.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	tb.writeRules(t, device)
	testkit.Eventually(t, 10*time.Second, "the reload ending the observation", func() bool { return tb.watchRun("observe dev0 /time") == nil })
	select {
	case <-run.done:
		t.Fatal("the observation ended at once; the test needs it waiting for its deregistration")
	default:
	}

	start := time.Now()
	tb.cancel()
	select {
	case err := <-tb.done:
		tb.done <- nil // for the cleanup's stop
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		// The reload gives way at once: the shutdown's steps keep their
		// budget, and the deregistration its share of it.
		if took := time.Since(start); took >= ShutdownGrace-shutdownMargin {
			t.Errorf("shutdown took %v: the reload used up its budget (%v)", took.Round(time.Millisecond), ShutdownGrace-shutdownMargin)
		}
	case <-time.After(ShutdownGrace + 2*time.Second):
		t.Fatal("Run did not return within ShutdownGrace")
	}
	checkRunGoroutines(t, tb.label)
}
