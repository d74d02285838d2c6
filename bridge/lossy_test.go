package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// lossyRules: numbered commands to dev1 and numbered pushes from dev2, so
// every command, device request, result and publish can be counted by its
// number.
func lossyRules(dev1 string) string {
	return fmt.Sprintf(`
[[device]]
name = "dev1"
url  = "coap://%s"

[[command]]
name           = "numbered-commands"
filter         = "cmd/{device}/{n}"
method         = "PUT"
url            = "coap://{device}/led/{n}"
response_topic = "replies/{device}/{n}"
qos            = 1
timeout        = "60s"

[[ingress]]
name    = "numbered-pushes"
path    = "/telemetry/{device}/{n}"
methods = ["POST"]
topic   = "sensors/{device}/{n}"
qos     = 1
`, dev1)
}

// numbered is format applied to 0..n-1 and then to "last".
func numbered(format string, n int) []string {
	keys := make([]string, 0, n+1)
	for i := range n {
		keys = append(keys, fmt.Sprintf(format, fmt.Sprint(i)))
	}
	return append(keys, fmt.Sprintf(format, "last"))
}

// proxyDrained reports whether p holds no datagram back.
func proxyDrained(p *peer.LossyProxy) bool {
	to, from := p.Counts()
	return to.Sent == to.Received-to.Dropped+to.Duplicated && from.Sent == from.Received-from.Dropped+from.Duplicated
}

// TestCommandsAndIngressExactlyOnceUnderLoss runs 500 QoS 1 commands and
// 500 confirmable pushes through proxies losing 5 % and duplicating 5 % of
// the datagrams each way (and reordering some): the device's handler runs
// once per command, one result is published per command, and every push is
// published once and acknowledged.
func TestCommandsAndIngressExactlyOnceUnderLoss(t *testing.T) {
	const n = 500
	imp := peer.Impairment{Drop: 0.05, Duplicate: 0.05, Reorder: 0.02, Jitter: 2 * time.Millisecond}
	// Tight but RFC-shaped timing; enough retransmissions that 5 % loss
	// each way never exhausts them (p ≈ 0.0975^7 per exchange).
	coap := coapside.EndpointOptions{AckTimeout: 50 * time.Millisecond, MaxRetransmit: 6}
	// The bridge's server answers separately whenever publishing is not
	// instant, so both kinds of response cross the lossy path.
	bridgeCoAP := coap
	bridgeCoAP.SeparateAfter = time.Microsecond

	// dev1: a device counting its handler runs per command number.
	handled := &testkit.Tally{}
	devConn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dev := &coapside.Server{
		Options: coapside.ServerOptions{EndpointOptions: coap},
		Handler: coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
			handled.Add(r.Path() + "=" + string(r.Payload))
			if strings.HasSuffix(r.Path(), "0") {
				// A slow device: the empty ACK and the response travel
				// apart (RFC 7252 §5.2.2).
				time.Sleep(2 * coap.AckTimeout)
			}
			w.SetCode(message.Changed)
			w.Write([]byte("done " + string(r.Payload)))
		}),
	}
	go dev.Serve(devConn)
	t.Cleanup(func() { dev.Close() })
	toDev := peer.StartLossyProxy(t, peer.LossyConfig{
		Target: devConn.LocalAddr().(*net.UDPAddr), Seed: 1, ToTarget: imp, FromTarget: imp,
	})

	tb := startBridge(t, lossyRules(toDev.Addr().String()), func(_ *Config, o *Options) {
		o.CoAP = bridgeCoAP
		o.CommandQueueTTL = time.Minute
	})
	toBridge := peer.StartLossyProxy(t, peer.LossyConfig{
		Target: tb.CoAPAddr().(*net.UDPAddr), Seed: 2, ToTarget: imp, FromTarget: imp,
	})

	results, published := &testkit.Tally{}, &testkit.Tally{}
	watch := func(filter string, c *testkit.Tally, key func(paho.Message) string) {
		opts := paho.NewClientOptions().AddBroker("tcp://" + tb.MQTTAddr()).SetClientID("watch-" + strings.TrimSuffix(filter, "/#"))
		cl := paho.NewClient(opts)
		if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		t.Cleanup(func() { cl.Disconnect(100) })
		tok := cl.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { c.Add(key(m)) })
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", filter, tok.Error())
		}
	}
	watch("replies/#", results, func(m paho.Message) string {
		var r commandResult
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			return m.Topic() + " " + err.Error()
		}
		return m.Topic() + " " + r.Status + " " + string(r.Payload)
	})
	watch("sensors/#", published, func(m paho.Message) string { return m.Topic() + "=" + string(m.Payload()) })

	// Commands: one QoS 1 publisher, every publish acknowledged by the broker.
	pubOpts := paho.NewClientOptions().AddBroker("tcp://" + tb.MQTTAddr()).SetClientID("lossy-commander")
	pub := paho.NewClient(pubOpts)
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { pub.Disconnect(100) })

	// Pushes: a device client of its own behind the other proxy.
	devClient, err := coapside.NewClient(coapside.ClientOptions{EndpointOptions: coap, LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { devClient.Close() })

	start := time.Now()
	pushErrs := make(chan error, n)
	var pushers sync.WaitGroup
	const workers = 8
	for w := range workers {
		pushers.Add(1)
		go func() {
			defer pushers.Done()
			for i := w; i < n; i += workers {
				ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
				url := fmt.Sprintf("coap://%s/telemetry/dev2/%d", toBridge.Addr(), i)
				resp, err := devClient.Post(ctx, url, message.TextPlain, []byte(fmt.Sprint(i)))
				cancel()
				switch {
				case err != nil:
					pushErrs <- fmt.Errorf("push %d: %w", i, err)
				case resp.Code != message.Changed:
					pushErrs <- fmt.Errorf("push %d: answered %v", i, resp.Code)
				}
			}
		}()
	}
	var toks []paho.Token
	for i := range n {
		toks = append(toks, pub.Publish(fmt.Sprintf("cmd/dev1/%d", i), 1, false, fmt.Sprint(i)))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
			t.Fatalf("command %d not accepted by the broker: %v", i, tok.Error())
		}
	}
	pushers.Wait()
	close(pushErrs)
	for err := range pushErrs {
		t.Error(err)
	}
	testkit.Eventually(t, 60*time.Second, "a result for every command", func() bool { return results.Total() >= n })
	testkit.Eventually(t, 10*time.Second, "every push published", func() bool { return published.Total() >= n })
	elapsed := time.Since(start)

	// Anything still held by a proxy (a late duplicate) reaches its peer
	// first; then one clean command and one clean push, sent past the
	// proxies, arrive at the subscribers behind whatever the bridge
	// published before them.
	testkit.Eventually(t, 10*time.Second, "proxies drained", func() bool { return proxyDrained(toDev) && proxyDrained(toBridge) })
	clean, err := coapside.NewClient(coapside.ClientOptions{LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer clean.Close()
	if resp, err := clean.Post(t.Context(), tb.coapURL("/telemetry/dev2/last"), message.TextPlain, []byte("last")); err != nil || resp.Code != message.Changed {
		t.Fatalf("last push: %v %v", resp, err)
	}
	if tok := pub.Publish("cmd/dev1/last", 1, false, "last"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("last command: %v", tok.Error())
	}
	testkit.Eventually(t, 20*time.Second, "last result and last push", func() bool {
		return results.Has(`replies/dev1/last ok "done last"`) && published.Has("sensors/dev2/last=last")
	})

	handled.Check(t, "device handler runs", numbered("/led/%[1]s=%[1]s", n))
	results.Check(t, "results published", numbered(`replies/dev1/%[1]s ok "done %[1]s"`, n))
	published.Check(t, "pushes published", numbered("sensors/dev2/%[1]s=%[1]s", n))

	// The proxies did impair both ways of both paths.
	for name, p := range map[string]*peer.LossyProxy{"bridge->device": toDev, "device->bridge": toBridge} {
		to, from := p.Counts()
		t.Logf("%s proxy: to target %+v; back %+v", name, to, from)
		for _, c := range []peer.LossyCounts{to, from} {
			if c.Dropped == 0 || c.Duplicated == 0 {
				t.Errorf("%s proxy did not both drop and duplicate: %+v", name, c)
			}
		}
	}
	// Lost answers made both servers replay cached responses to
	// retransmitted requests instead of running their handlers again.
	devStats, srvStats := dev.Stats(), tb.coap.srv.Stats()
	if devStats.DuplicateReplays == 0 || srvStats.DuplicateReplays == 0 {
		t.Errorf("no cached response replayed: device %d, bridge %d", devStats.DuplicateReplays, srvStats.DuplicateReplays)
	}
	cc, err := tb.devices.client(false)
	if err != nil {
		t.Fatal(err)
	}
	ccStats := cc.Endpoint().Stats().Snapshot()
	t.Logf("%d commands and %d pushes in %v; device: %d handler runs, %d duplicates (%d replayed), %d separate responses; "+
		"bridge command client: %d retransmissions, %d timeouts, %d unmatched ACKs; "+
		"bridge server: %d handler runs, %d duplicates (%d replayed), %d separate responses; push client: %d retransmissions",
		n, n, elapsed.Round(time.Millisecond), devStats.RequestsHandled, devStats.Duplicates, devStats.DuplicateReplays, devStats.SeparateResponses,
		ccStats.Retransmissions, ccStats.Timeouts, ccStats.UnmatchedAcks,
		srvStats.RequestsHandled, srvStats.Duplicates, srvStats.DuplicateReplays, srvStats.SeparateResponses,
		devClient.Endpoint().Stats().Snapshot().Retransmissions)
}
