package bridge

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func commandRules(deviceAddr string) string {
	return fmt.Sprintf(`
[[device]]
name = "dev1"
url  = "coap://%s"

[[command]]
name           = "actuators"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
timeout        = "1s"

[[command]]
name           = "cbor"
filter         = "cbor/{device}"
method         = "POST"
url            = "coap://{device}/cfg"
response_topic = "cbor-replies/{device}"
content_format = "cbor"
timeout        = "1s"

[[ingress]]
name    = "hello"
path    = "/hello/{device}"
methods = ["POST"]
topic   = "hello/{device}"
`, deviceAddr)
}

func decodeResult(t *testing.T, b []byte) commandResult {
	t.Helper()
	var r commandResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("response %q: %v", b, err)
	}
	return r
}

func TestCommandReachesDeviceAndResponseIsPublished(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("PUT /actuators/led", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.SetCode(message.Changed)
		w.SetContentFormat(message.TextPlain)
		w.Write([]byte("led=" + string(r.Payload)))
	})
	tb := startBridge(t, commandRules(dev.addr.String()), nil)
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)

	publish(t, tb.MQTTAddr(), "cmd/dev1/actuators/led", 1, false, "on")
	rec := <-dev.got
	if rec.method != message.PUT || rec.path != "/actuators/led" || rec.payload != "on" {
		t.Fatalf("device got %+v", rec)
	}
	m := replies.next(t, 5*time.Second)
	if m.Topic() != "replies/dev1/actuators/led" {
		t.Fatalf("reply topic %s", m.Topic())
	}
	r := decodeResult(t, m.Payload())
	if r.Status != "ok" || r.Code != "2.04" || string(r.Payload) != `"led=on"` || r.Device != "dev1" || r.Rule != "actuators" {
		t.Fatalf("result %+v payload %s", r, r.Payload)
	}
	if r.ContentFormat == nil || *r.ContentFormat != 0 {
		t.Fatalf("content format %v", r.ContentFormat)
	}
	if got := testutil.ToFloat64(tb.metrics.messages.WithLabelValues("actuators", dirMQTTToCoAP)); got != 1 {
		t.Errorf("messages metric %v", got)
	}
}

func TestCommandJSONToCBOR(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("POST /cfg", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	tb := startBridge(t, commandRules(dev.addr.String()), nil)
	replies := subscribe(t, tb.MQTTAddr(), "cbor-replies/#", 0)
	publish(t, tb.MQTTAddr(), "cbor/dev1", 0, false, `{"a":1}`)
	rec := <-dev.got
	if rec.cf != int(message.AppCBOR) || rec.payload != "\xa1\x61a\x01" {
		t.Fatalf("device got cf %d payload %x", rec.cf, rec.payload)
	}
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" {
		t.Fatalf("result %+v", r)
	}
	// Not JSON: an error result, nothing sent to the device.
	publish(t, tb.MQTTAddr(), "cbor/dev1", 0, false, `{not json`)
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "error" || r.Error == "" {
		t.Fatalf("result %+v", r)
	}
	if dev.count() != 1 {
		t.Fatalf("device got %d requests, want 1", dev.count())
	}
}

func TestCommandUnknownDeviceIsRefused(t *testing.T) {
	tb := startBridge(t, commandRules("127.0.0.1:9"), nil)
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 0)
	publish(t, tb.MQTTAddr(), "cmd/nobody/x", 0, false, "1")
	r := decodeResult(t, replies.next(t, 5*time.Second).Payload())
	if r.Status != "error" {
		t.Fatalf("result %+v", r)
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("actuators", reasonUnknownDevice)); got != 1 {
		t.Errorf("unknown device errors %v", got)
	}
}

// TestCommandTimeoutThenQueuedUntilSeen: a silent device times out (a
// timeout result is published), later commands wait for it, and when it
// pushes through ingress they are delivered with their outcome published.
func TestCommandTimeoutThenQueuedUntilSeen(t *testing.T) {
	// A UDP socket that swallows everything: the device is down.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := silent.LocalAddr().String()
	tb := startBridge(t, commandRules(addr), func(_ *Config, o *Options) { o.CommandQueueTTL = time.Hour })
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)

	publish(t, tb.MQTTAddr(), "cmd/dev1/led", 1, false, "first")
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "timeout" {
		t.Fatalf("first result %+v", r)
	}
	publish(t, tb.MQTTAddr(), "cmd/dev1/led", 1, false, "second")
	testkit.Eventually(t, 5*time.Second, "command queued", func() bool {
		return testutil.ToFloat64(tb.metrics.queueDepth) == 1
	})
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "queued" || r.Position != 1 {
		t.Fatalf("second result %+v, want queued at position 1", r)
	}
	replies.none(t, 200*time.Millisecond)

	// The device comes back on the same port and says hello.
	silent.Close()
	dev := startDevice(t, addr)
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	c := newCoAPClient(t)
	if resp, err := c.Post(t.Context(), tb.coapURL("/hello/dev1"), message.TextPlain, []byte("hi")); err != nil || resp.Code != message.Changed {
		t.Fatalf("hello: %v %v", resp, err)
	}
	rec := <-dev.got
	if rec.payload != "second" {
		t.Fatalf("device got %+v", rec)
	}
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" || r.Code != "2.04" {
		t.Fatalf("queued result %+v", r)
	}
	if testutil.ToFloat64(tb.metrics.queueDepth) != 0 {
		t.Fatal("queue not drained")
	}
}

// TestCommandMQTT5ResponseTopic: a command carrying an MQTT 5 response topic
// and correlation data (the embedded broker keeps them) gets its result
// there too, with the correlation data.
func TestCommandMQTT5ResponseTopic(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	tb := startBridge(t, commandRules(dev.addr.String()), nil)
	got := make(chan *mqttside.Delivery, 1)
	if err := tb.mqtt.Subscribe(t.Context(), "v5/reply", 1, mqttside.HandlerFunc(func(d *mqttside.Delivery) { got <- d })); err != nil {
		t.Fatal(err)
	}
	err := tb.mqtt.Publish(t.Context(), mqttside.Message{Topic: "cmd/dev1/led", Payload: []byte("on"), QoS: 1,
		ResponseTopic: "v5/reply", CorrelationData: []byte("req-42")})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if string(d.CorrelationData) != "req-42" {
			t.Fatalf("correlation data %q", d.CorrelationData)
		}
		if r := decodeResult(t, d.Payload); r.Status != "ok" || r.Code != "2.04" {
			t.Fatalf("result %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reply on the MQTT 5 response topic")
	}
}

// TestCommandBackpressureLosesNothing floods a slow device through a
// one-worker, one-slot backlog: every command still reaches it.
func TestCommandBackpressureLosesNothing(t *testing.T) {
	dev := startDevice(t, "")
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) {
		time.Sleep(20 * time.Millisecond)
		w.SetCode(message.Changed)
	})
	tb := startBridge(t, commandRules(dev.addr.String()), func(_ *Config, o *Options) {
		o.CommandWorkers, o.CommandBacklog = 1, 1
	})
	const n = 20
	for i := 0; i < n; i++ {
		if err := tb.mqtt.Publish(t.Context(), mqttside.Message{Topic: "cmd/dev1/led", Payload: []byte(fmt.Sprint(i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "every command delivered", func() bool { return dev.count() == n })
	if testutil.ToFloat64(tb.metrics.backpressure) == 0 {
		t.Error("the backlog never filled; the test did not exercise back-pressure")
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("actuators", reasonQueueFull)); got != 0 {
		t.Errorf("%v commands refused", got)
	}
}

// TestCommandRefusedForItsTopicGetsErrorResult: a command whose topic has a
// level the bridge will not put in a URI ("..", an empty level) is refused
// and counted, and its error result is published on the response topic
// that mirrors the command's topic, so the requester is not left waiting.
func TestCommandRefusedForItsTopicGetsErrorResult(t *testing.T) {
	dev := startDevice(t, "")
	tb := startBridge(t, commandRules(dev.addr.String()), nil)
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	for _, tc := range []struct{ topic, reply string }{
		{"cmd/../x", "replies/../x"},
		{"cmd/dev1/a/../b", "replies/dev1/a/../b"},
		{"cmd/dev1/./b", "replies/dev1/./b"},
		{"cmd//x", "replies//x"},
	} {
		publish(t, tb.MQTTAddr(), tc.topic, 1, false, "on")
		m := replies.next(t, 5*time.Second)
		if m.Topic() != tc.reply {
			t.Fatalf("%s: result on %q, want %q", tc.topic, m.Topic(), tc.reply)
		}
		if r := decodeResult(t, m.Payload()); r.Status != "error" || r.Topic != tc.topic || r.Error == "" {
			t.Fatalf("%s: result %+v", tc.topic, r)
		}
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("actuators", reasonEscape)); got != 4 {
		t.Errorf("escape errors %v, want 4", got)
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("actuators", reasonPublish)); got != 0 {
		t.Errorf("%v results not published", got)
	}
	if dev.count() != 0 {
		t.Fatalf("the device got %d requests", dev.count())
	}
}

// TestOverMaxPayloadFromRemoteBroker: a remote broker delivers messages
// larger than mqtt.max_payload. A command is not forwarded: an error
// result is published and counted; a resource rule does not keep it.
// Messages within the limit still go.
func TestOverMaxPayloadFromRemoteBroker(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	dev := startDevice(t, "")
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	tb := startBridge(t, commandRules(dev.addr.String())+resourceRules, func(c *Config, _ *Options) {
		useRemoteBroker(c, broker.Addr(), "bridge-maxpayload")
		c.MQTT.MaxPayload = 1024
	})
	replies := subscribe(t, broker.Addr(), "replies/#", 1)
	big, fits := strings.Repeat("x", 4096), strings.Repeat("y", 1024)

	publish(t, broker.Addr(), "cmd/dev1/led", 1, false, big)
	r := decodeResult(t, replies.next(t, 10*time.Second).Payload())
	if r.Status != "error" || !strings.Contains(r.Error, "max_payload") {
		t.Fatalf("result %+v", r)
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("actuators", reasonTooLarge)); got != 1 {
		t.Errorf("too_large errors for the command %v, want 1", got)
	}
	publish(t, broker.Addr(), "cmd/dev1/led", 1, false, fits)
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "ok" {
		t.Fatalf("result within the limit %+v", r)
	}
	if dev.count() != 1 {
		t.Fatalf("the device got %d requests, want 1 (the command within the limit)", dev.count())
	}

	// The broker delivers in order: once d2 is served, d1 was seen.
	publish(t, broker.Addr(), "config/d1", 1, false, big)
	publish(t, broker.Addr(), "config/d2", 1, false, fits)
	c := newCoAPClient(t)
	testkit.Eventually(t, 10*time.Second, "d2 served", func() bool {
		resp, err := c.Get(t.Context(), tb.coapURL("/config/d2"))
		return err == nil && resp.Code == message.Content
	})
	resp, err := c.Get(t.Context(), tb.coapURL("/config/d1"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != message.NotFound {
		t.Fatalf("oversized resource message served: %v (%d bytes), want 4.04", resp.Code, len(resp.Payload))
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("", reasonTooLarge)); got != 1 {
		t.Errorf("too_large errors for the resource %v, want 1", got)
	}
}

// TestCommandOfflineDeviceProbedBack: a device that stops answering is
// probed with CoAP pings; commands published meanwhile are queued (up to
// the queue size, then refused) and, once the device answers a probe again
// without any uplink of its own, delivered in order.
func TestCommandOfflineDeviceProbedBack(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := silent.LocalAddr().String()
	pings := make(chan struct{}, 100)
	go func() { // ends when silent is closed
		buf := make([]byte, 1500)
		for {
			n, _, err := silent.ReadFrom(buf)
			if err != nil {
				return
			}
			//  Ver=1 T=CON TKL=0 | Code 0.00: a CoAP ping (RFC 7252 §4.3)
			if n == 4 && buf[0] == 0x40 && buf[1] == 0 {
				pings <- struct{}{}
			}
		}
	}()
	tb := startBridge(t, commandRules(addr), func(_ *Config, o *Options) {
		o.CommandQueueTTL = time.Hour // expiry (and any probe tied to it) out of the picture
		o.CommandQueue = 3
		o.CommandWorkers = 1 // commands are queued in the order they arrive
		o.ProbeMin, o.ProbeMax = 50*time.Millisecond, 200*time.Millisecond
	})
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)

	publish(t, tb.MQTTAddr(), "cmd/dev1/led", 1, false, "first")
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "timeout" {
		t.Fatalf("first result %+v", r)
	}
	for i := 0; i < 3; i++ {
		// The inline client delivers synchronously, so in this order.
		if err := tb.mqtt.Publish(t.Context(), mqttside.Message{Topic: "cmd/dev1/led", Payload: []byte(fmt.Sprint(i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 5*time.Second, "three commands queued", func() bool {
		return testutil.ToFloat64(tb.metrics.queueDepth) == 3
	})
	for i := 1; i <= 3; i++ {
		if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "queued" || r.Position != i || r.ExpiresAt == "" {
			t.Fatalf("queued result %d: %+v", i, r)
		}
	}
	publish(t, tb.MQTTAddr(), "cmd/dev1/led", 1, false, "one too many")
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "error" || r.Error == "" {
		t.Fatalf("result beyond the queue %+v", r)
	}
	// Pinged while silent, and again after an unanswered ping.
	for i := 0; i < 2; i++ {
		select {
		case <-pings:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d probes of the silent device, want 2", i)
		}
	}

	silent.Close()
	dev := startDevice(t, addr)
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	for i := 0; i < 3; i++ {
		select {
		case rec := <-dev.got:
			if rec.payload != fmt.Sprint(i) {
				t.Fatalf("command %d: device got %q", i, rec.payload)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("queued command %d not delivered: the device was not found again", i)
		}
		if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" {
			t.Fatalf("queued result %+v", r)
		}
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("actuators", reasonQueueFull)); got != 1 {
		t.Errorf("queue_full errors %v, want 1", got)
	}
	testkit.Eventually(t, 5*time.Second, "queue drained", func() bool { return testutil.ToFloat64(tb.metrics.queueDepth) == 0 })
}

// TestCommandShutdownAnswersEveryCommand: with the embedded broker (whose
// deliveries cannot be redelivered) a shutdown answers the command being
// sent and those still waiting for a worker; none is dropped silently.
func TestCommandShutdownAnswersEveryCommand(t *testing.T) {
	dev := startDevice(t, "")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { <-release })
	tb := startBridge(t, commandRules(dev.addr.String()), func(_ *Config, o *Options) {
		o.CommandWorkers = 1
		o.CommandBacklog = 10
	})
	var mu sync.Mutex
	var results [][]byte
	err := tb.mqtt.Subscribe(t.Context(), "replies/#", 1, mqttside.HandlerFunc(func(d *mqttside.Delivery) {
		mu.Lock()
		results = append(results, d.Payload)
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := tb.mqtt.Publish(t.Context(), mqttside.Message{Topic: "cmd/dev1/led", Payload: []byte(fmt.Sprint(i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-dev.got // the worker is busy with it; the others wait in the backlog
		}
	}
	tb.stop(t)

	mu.Lock()
	defer mu.Unlock()
	status := map[string]int{}
	for _, p := range results {
		status[decodeResult(t, p).Status]++
	}
	if len(results) != 4 {
		t.Fatalf("%d results, want 4: %v", len(results), status)
	}
	if status["error"] != 1 || status["expired"] != 3 {
		t.Fatalf("statuses %v, want 1 error (cancelled exchange) and 3 expired", status)
	}
}

// TestCommandShutdownLeavesRemoteCommandsToBroker: with a remote broker a
// shutdown does not acknowledge the QoS 1 commands it did not complete, so
// the broker delivers them again to the next bridge with the same client
// ID (a persistent session), and every one reaches the device.
func TestCommandShutdownLeavesRemoteCommandsToBroker(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	dev := startDevice(t, "")
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { <-release })
	clientID := fmt.Sprintf("bridge-redeliver-%d", time.Now().UnixNano())
	remote := func(c *Config, o *Options) {
		c.MQTT.Broker = "tcp://" + broker.Addr()
		c.MQTT.ClientID = clientID
		c.MQTT.Embedded.Listen = ""
		o.CommandWorkers = 1
	}
	first := startBridge(t, commandRules(dev.addr.String()), remote)
	for i := 0; i < 4; i++ {
		publish(t, broker.Addr(), "cmd/dev1/led", 1, false, fmt.Sprint(i))
	}
	<-dev.got // the worker is busy with it; the others wait in the backlog
	first.stop(t)

	once.Do(func() { close(release) })
	startBridge(t, commandRules(dev.addr.String()), remote)
	testkit.Eventually(t, 20*time.Second, "every command at the device", func() bool {
		dev.mu.Lock()
		defer dev.mu.Unlock()
		seen := map[string]bool{}
		for _, r := range dev.requests {
			seen[r.payload] = true
		}
		return len(seen) == 4
	})
}

// TestCommandOverlappingFiltersRunOnce: a topic that matches a command
// filter and a less specific one arrives once per subscription; the topic
// is matched once, to the most specific rule, and the device gets one
// request, whichever broker delivers.
func TestCommandOverlappingFiltersRunOnce(t *testing.T) {
	for _, remote := range []bool{false, true} {
		name := "embedded broker"
		if remote {
			name = "mosquitto"
		}
		t.Run(name, func(t *testing.T) {
			dev := startDevice(t, "")
			for _, p := range []string{"PUT /led", "PUT /any/led", "PUT /mark"} {
				dev.mux.HandleFunc(p, func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
			}
			var broker string
			tb := startBridge(t, fmt.Sprintf(`
[[device]]
name = "dev1"
url  = "coap://%s"

[[command]]
name           = "led"
filter         = "cmd/{device}/led"
method         = "PUT"
url            = "coap://{device}/led"
response_topic = "replies/led"

[[command]]
name           = "any"
filter         = "cmd/{device}/{what...}"
method         = "PUT"
url            = "coap://{device}/any/{what...}"
response_topic = "replies/any"

[[command]]
name           = "mark"
filter         = "mark/{device}"
method         = "PUT"
url            = "coap://{device}/mark"
response_topic = "replies/mark"
`, dev.addr), func(c *Config, o *Options) {
				// One worker takes the commands in the order they came.
				o.CommandWorkers = 1
				if remote {
					broker = peer.StartMosquitto(t, 0, "allow_anonymous true\n").Addr()
					useRemoteBroker(c, broker, "bridge-overlap")
				}
			})
			if !remote {
				broker = tb.MQTTAddr()
			}
			replies := subscribe(t, broker, "replies/#", 1)
			publish(t, broker, "cmd/dev1/led", 1, false, "on")
			// A broker acknowledges a publish before it delivers it, so the
			// marker goes out once the command has been answered: both
			// deliveries of the command reached the bridge's one worker
			// before the marker's, and a second run would come before it.
			if got := replies.next(t, 10*time.Second).Topic(); got != "replies/led" {
				t.Fatalf("first reply on %s, want replies/led", got)
			}
			publish(t, broker, "mark/dev1", 1, false, "x")
			for replies.next(t, 10*time.Second).Topic() != "replies/mark" {
			}
			dev.mu.Lock()
			defer dev.mu.Unlock()
			var paths []string
			for _, r := range dev.requests {
				paths = append(paths, r.path)
			}
			if strings.Join(paths, " ") != "/led /mark" {
				t.Fatalf("device got %v, want one /led and the marker", paths)
			}
		})
	}
}

// TestCommandNotSentBehindUnansweredRequest: a device that does not answer
// the bridge's catalog read holds the one request NSTART allows; a command
// for it meanwhile never leaves the bridge. It is not reported as a
// timeout the device may have acted on: it waits in the device's queue
// ("queued"), and the device never sees it.
func TestCommandNotSentBehindUnansweredRequest(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var mu sync.Mutex
	var got []message.Code
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := silent.ReadFrom(buf)
			if err != nil {
				return
			}
			var m message.Message
			if m.Unmarshal(buf[:n]) == nil {
				mu.Lock()
				got = append(got, m.Code)
				mu.Unlock()
			}
		}
	}()
	tb := startBridge(t, commandRules(silent.LocalAddr().String()), func(c *Config, o *Options) {
		c.Catalog.Topic = "cat/{device}"
		o.CoAP = slowCoAP // the catalog read stays unanswered for a minute, well past the command's 1s
	})
	testkit.Eventually(t, 5*time.Second, "the catalog read reaches the device", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0
	})
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	publish(t, tb.MQTTAddr(), "cmd/dev1/led", 1, false, "on")
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "queued" {
		t.Fatalf("result %+v, want queued: the command never left", r)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, c := range got {
		if c == message.PUT {
			t.Fatalf("the device received the command: %v", got)
		}
	}
}

// TestCommandRetainedRunsOnce: a retained command is run once, when it is
// published. The copy the broker stores and sends again at every
// subscription (each reconnect, a restart of the bridge) is not a new
// command: it does not reach the device again, it is counted.
func TestCommandRetainedRunsOnce(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\npersistence true\n")
	dev := startDevice(t, "")
	dev.mux.HandleFunc("PUT /toggle", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	clientID := fmt.Sprintf("bridge-retained-%d", time.Now().UnixNano())
	remote := func(c *Config, _ *Options) {
		useRemoteBroker(c, broker.Addr(), "")
		c.MQTT.ClientID = clientID // the same session across restarts
	}
	tb := startBridge(t, commandRules(dev.addr.String()), remote)
	replies := subscribe(t, broker.Addr(), "replies/#", 1)
	retained := func(tb *testBridge) float64 {
		return testutil.ToFloat64(tb.metrics.errors.WithLabelValues("actuators", reasonRetained))
	}

	// QoS 0: nothing for the broker to redeliver when it stops right after
	// the result (a QoS 1 command's PUBACK follows its result).
	publish(t, broker.Addr(), "cmd/dev1/toggle", 0, true, "1")
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "ok" {
		t.Fatalf("result %+v", r)
	}
	// The broker restarts (keeping its retained messages): the bridge
	// subscribes again and is sent the stored command.
	broker.Stop()
	broker.Restart()
	replies = subscribe(t, broker.Addr(), "replies/#", 1)
	testkit.Eventually(t, 15*time.Second, "the stored command counted or run", func() bool { return retained(tb) == 1 || dev.count() > 1 })
	if n := dev.count(); n != 1 {
		t.Fatalf("after the broker's restart the device got %d requests, want 1", n)
	}

	// Published while the bridge is down: the broker keeps it in the
	// bridge's session and sends it once more as the stored message when
	// the bridge subscribes at its start. It runs once.
	tb.stop(t)
	publish(t, broker.Addr(), "cmd/dev1/toggle", 1, true, "2")
	tb = startBridge(t, commandRules(dev.addr.String()), remote)
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "ok" {
		t.Fatalf("result %+v", r)
	}
	testkit.Eventually(t, 10*time.Second, "the stored command counted", func() bool { return retained(tb) == 1 })
	replies.none(t, 500*time.Millisecond)
	var got []string
	dev.mu.Lock()
	for _, r := range dev.requests {
		got = append(got, r.payload)
	}
	dev.mu.Unlock()
	if fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("the device got %q, want each command once", got)
	}
}
