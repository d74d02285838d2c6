package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/coap-mqtt/bridge/mqttside"
)

// sleepyRules command learned devices; queueTTL, when set, is the command
// rule's queue_ttl line.
func sleepyRules(queueTTL string) string {
	return `
[[ingress]]
name    = "up"
path    = "/up/{device}"
methods = ["POST"]
topic   = "up/{device}"

[[command]]
name           = "down"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
timeout        = "3s"
` + queueTTL + "\n"
}

// delivered is a request a sleepy device acted on.
type delivered struct {
	path    string
	at      time.Time
	uplink  time.Time // when the uplink that opened its window was sent
	window  int       // which awake window (from 1)
	inFirst bool      // the first request of its window
}

// sleepyDevice is a battery device in queue mode, on a raw CoAP socket:
// it sends an uplink (a POST to the bridge), answers requests for listen
// after it, then sleeps: everything that arrives while it sleeps is
// dropped unanswered, as a radio that is off would. It answers each
// request after handle (the time it takes to act), and a retransmission
// of a request it answered with the same ACK again, acting on it once
// (RFC 7252 §4.5).
type sleepyDevice struct {
	name   string
	conn   *net.UDPConn
	bridge *net.UDPAddr
	listen time.Duration
	sleep  time.Duration
	handle time.Duration

	cycle  chan struct{} // closed: wake every sleep, not only once
	asleep chan struct{} // closed after the first window
	done   chan struct{}

	mu          sync.Mutex
	got         []delivered
	dropped     int // requests that came while it slept
	retransmits int
	windows     int
	mid         uint16
}

// startSleepyDevice starts a device that sends its first uplink at once
// and then sleeps until wakeCycle is called.
func startSleepyDevice(t *testing.T, bridge net.Addr, name string, listen, sleep, handle time.Duration) *sleepyDevice {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := &sleepyDevice{name: name, conn: conn, bridge: bridge.(*net.UDPAddr), listen: listen, sleep: sleep, handle: handle,
		cycle: make(chan struct{}), asleep: make(chan struct{}), done: make(chan struct{}), mid: 0x4000}
	ctx, cancel := context.WithCancel(context.Background())
	go d.run(ctx)
	t.Cleanup(func() {
		cancel()
		conn.Close()
		<-d.done
	})
	return d
}

// wakeCycle makes the device wake every sleep from now on.
func (d *sleepyDevice) wakeCycle() { close(d.cycle) }

func (d *sleepyDevice) run(ctx context.Context) {
	defer close(d.done)
	answered := map[uint16][]byte{} // MID -> the ACK sent (dedup)
	first := true
	for ctx.Err() == nil {
		up := time.Now()
		d.mu.Lock()
		d.mid++
		d.windows++
		window := d.windows
		d.mu.Unlock()
		push := &message.Message{Type: message.Confirmable, Code: message.POST, MessageID: d.mid, Token: []byte{0xd0, byte(d.mid)}}
		push.Options = push.Options.SetPath("/up/" + d.name)
		push.Payload = []byte("up")
		b, _ := push.MarshalBinary()
		if _, err := d.conn.WriteToUDP(b, d.bridge); err != nil {
			return
		}
		if !d.serve(up.Add(d.listen), true, up, window, answered) {
			return
		}
		if first {
			close(d.asleep)
			first = false
			for { // asleep until told to cycle
				select {
				case <-d.cycle:
				default:
					if !d.serve(time.Now().Add(50*time.Millisecond), false, up, window, answered) {
						return
					}
					continue
				}
				break
			}
		}
		if !d.serve(time.Now().Add(d.sleep), false, up, window, answered) {
			return
		}
	}
}

// serve reads until the deadline, answering requests when awake and
// dropping them when not; false once the socket is closed.
func (d *sleepyDevice) serve(until time.Time, awake bool, uplink time.Time, window int, answered map[uint16][]byte) bool {
	buf := make([]byte, 1500)
	for {
		_ = d.conn.SetReadDeadline(until)
		n, from, err := d.conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			return errors.As(err, &ne) && ne.Timeout()
		}
		m, err := message.Decode(buf[:n])
		if err != nil || m.Type != message.Confirmable || !m.Code.IsRequest() {
			continue // the ACK of an uplink, or noise
		}
		d.mu.Lock()
		if !awake {
			d.dropped++
			d.mu.Unlock()
			continue
		}
		if ack, ok := answered[m.MessageID]; ok {
			d.retransmits++
			d.mu.Unlock()
			_, _ = d.conn.WriteToUDP(ack, from)
			continue
		}
		now := time.Now()
		d.got = append(d.got, delivered{path: m.Path(), at: now, uplink: uplink, window: window,
			inFirst: len(d.got) == 0 || d.got[len(d.got)-1].window != window})
		d.mu.Unlock()
		time.Sleep(d.handle) // acting on it
		ack := &message.Message{Type: message.Acknowledgement, Code: message.Changed, MessageID: m.MessageID, Token: m.Token}
		b, _ := ack.MarshalBinary()
		answered[m.MessageID] = b
		_, _ = d.conn.WriteToUDP(b, from)
	}
}

func (d *sleepyDevice) requests() []delivered {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.got)
}

// waitAsleep waits for the end of the device's first awake window.
func (d *sleepyDevice) waitAsleep(t *testing.T) {
	t.Helper()
	select {
	case <-d.asleep:
	case <-time.After(10 * time.Second):
		t.Fatal("the device never went to sleep")
	}
}

// publishInOrder publishes n commands from one MQTT client, each once its
// broker acknowledged the one before: topic i is prefix+i.
func publishInOrder(t *testing.T, broker, prefix string, n int) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano()))
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	for i := range n {
		if tok := c.Publish(fmt.Sprint(prefix, i), 1, false, fmt.Sprint(i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
}

// TestQueueModeSleepyDeviceGetsEveryCommandInOrder: a device that sleeps
// between uplinks gets 100 commands published while it slept: each is
// announced queued (position 1..100, with its expiry) at once, then sent
// after the device's next uplinks, in order, while it is awake only (the
// drain stops when the awake window closes and goes on after the next
// uplink), each once, each ending ok.
func TestQueueModeSleepyDeviceGetsEveryCommandInOrder(t *testing.T) {
	const n = 100
	const awake = time.Second
	tb := startBridge(t, sleepyRules(""), func(c *Config, o *Options) {
		c.Devices.Awake = awake
		c.Devices.QueueTTL = 2 * time.Minute
		o.CoAP.AckTimeout = 500 * time.Millisecond // a noisy machine answers late
	})
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	// The device listens a second longer than the bridge counts it awake
	// (its clock starts when it sends, the bridge's when it receives),
	// and takes 20ms per command: 100 need more than one window.
	dev := startSleepyDevice(t, tb.CoAPAddr(), "sleepy", awake+time.Second, time.Second, 20*time.Millisecond)
	dev.waitAsleep(t)
	if _, ok := tb.learned.lookup("sleepy"); !ok {
		t.Fatal("the device's uplink was not learned")
	}

	published := time.Now()
	publishInOrder(t, tb.MQTTAddr(), "cmd/sleepy/n/", n)
	results := map[string][]string{} // reply topic -> statuses in order
	for i := range n {
		m := replies.next(t, 10*time.Second)
		r := decodeResult(t, m.Payload())
		want := fmt.Sprint("replies/sleepy/n/", i)
		if m.Topic() != want || r.Status != "queued" || r.Position != i+1 || r.Topic != fmt.Sprint("cmd/sleepy/n/", i) {
			t.Fatalf("result %d on %s: %+v, want queued at position %d on %s", i, m.Topic(), r, i+1, want)
		}
		exp, err := time.Parse(time.RFC3339Nano, r.ExpiresAt)
		if err != nil || exp.Before(published.Add(2*time.Minute-time.Second)) || exp.After(time.Now().Add(2*time.Minute)) {
			t.Fatalf("expires_at %q (%v), want 2m after the publish", r.ExpiresAt, err)
		}
		results[m.Topic()] = append(results[m.Topic()], r.Status)
	}
	if got := dev.requests(); len(got) != 0 {
		t.Fatalf("the sleeping device got %d commands", len(got))
	}

	dev.wakeCycle()
	for range n {
		m := replies.next(t, 60*time.Second)
		r := decodeResult(t, m.Payload())
		if r.Status != "ok" || r.Code != "2.04" {
			t.Fatalf("result on %s: %+v", m.Topic(), r)
		}
		results[m.Topic()] = append(results[m.Topic()], r.Status)
	}
	replies.none(t, 500*time.Millisecond)
	for i := range n {
		topic := fmt.Sprint("replies/sleepy/n/", i)
		if got := results[topic]; !slices.Equal(got, []string{"queued", "ok"}) {
			t.Errorf("%s: results %v, want [queued ok]", topic, got)
		}
	}

	got := dev.requests()
	if len(got) != n {
		t.Fatalf("the device acted on %d commands, want %d", len(got), n)
	}
	var lat, firstLat []time.Duration
	windows := map[int]int{}
	for i, d := range got {
		if want := fmt.Sprint("/n/", i); d.path != want {
			t.Fatalf("request %d was %s, want %s (in order, each once)", i, d.path, want)
		}
		lat = append(lat, d.at.Sub(d.uplink))
		if d.inFirst {
			firstLat = append(firstLat, d.at.Sub(d.uplink))
		}
		windows[d.window]++
	}
	dev.mu.Lock()
	dropped, retransmits := dev.dropped, dev.retransmits
	dev.mu.Unlock()
	if dropped != 0 {
		t.Errorf("%d requests reached the device while it slept: the drain did not stop with the awake window", dropped)
	}
	if len(windows) < 2 {
		t.Errorf("every command went out in one awake window %v: the test did not cross a window", windows)
	}
	if depth := testutil.ToFloat64(tb.metrics.queueDepth); depth != 0 {
		t.Errorf("queue depth %v after the drain", depth)
	}
	slices.Sort(lat)
	slices.Sort(firstLat)
	t.Logf("commands per awake window %v; retransmissions answered again %d", windows, retransmits)
	t.Logf("uplink -> first command of the window at the device: median %v, max %v (%d windows)",
		firstLat[len(firstLat)/2], firstLat[len(firstLat)-1], len(firstLat))
	t.Logf("uplink -> command at the device, all %d (20ms per command at the device): median %v, p99 %v",
		n, lat[len(lat)/2], lat[len(lat)*99/100])
}

// TestQueueModeCommandExpires: a command for a sleeping device waits at
// most its rule's queue_ttl: then it is answered expired, counted, without
// the device having woken, and never sent.
func TestQueueModeCommandExpires(t *testing.T) {
	tb := startBridge(t, sleepyRules(`queue_ttl = "1s"`), func(c *Config, o *Options) {
		c.Devices.Awake = 500 * time.Millisecond
		c.Devices.QueueTTL = time.Hour
	})
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	dev := startSleepyDevice(t, tb.CoAPAddr(), "sleepy", time.Second, time.Second, 0)
	dev.waitAsleep(t)

	sent := time.Now()
	publish(t, tb.MQTTAddr(), "cmd/sleepy/led", 1, false, "on")
	r := decodeResult(t, replies.next(t, 5*time.Second).Payload())
	exp, err := time.Parse(time.RFC3339Nano, r.ExpiresAt)
	if r.Status != "queued" || r.Position != 1 || err != nil || exp.Sub(sent) > 1500*time.Millisecond || exp.Before(sent) {
		t.Fatalf("first result %+v (expires_at %v), want queued for the rule's 1s", r, err)
	}
	r = decodeResult(t, replies.next(t, 5*time.Second).Payload())
	if r.Status != "expired" || !strings.Contains(r.Error, "time to live") {
		t.Fatalf("second result %+v, want expired", r)
	}
	if e := time.Since(sent); e < time.Second || e > 4*time.Second {
		t.Errorf("expired after %v, want about 1s", e)
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("down", reasonExpired)); got != 1 {
		t.Errorf("expired commands counted %v, want 1", got)
	}
	if depth := testutil.ToFloat64(tb.metrics.queueDepth); depth != 0 {
		t.Errorf("queue depth %v", depth)
	}
	// Awake again: nothing is left to send.
	dev.wakeCycle()
	testkit.Eventually(t, 10*time.Second, "the device woke again", func() bool {
		dev.mu.Lock()
		defer dev.mu.Unlock()
		return dev.windows >= 3
	})
	if got := dev.requests(); len(got) != 0 {
		t.Fatalf("the expired command reached the device: %+v", got)
	}
	replies.none(t, 200*time.Millisecond)
}

// TestQueueModeQueueFull: beyond devices.queue_size a command for a
// sleeping device gets an error result at once, counted; the queued ones
// are delivered when it wakes.
func TestQueueModeQueueFull(t *testing.T) {
	tb := startBridge(t, sleepyRules(""), func(c *Config, o *Options) {
		c.Devices.Awake = 500 * time.Millisecond
		c.Devices.QueueSize = 3
	})
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	dev := startSleepyDevice(t, tb.CoAPAddr(), "sleepy", time.Second, time.Second, 0)
	dev.waitAsleep(t)

	publishInOrder(t, tb.MQTTAddr(), "cmd/sleepy/n/", 4)
	for i := range 3 {
		if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "queued" || r.Position != i+1 {
			t.Fatalf("result %d: %+v, want queued", i, r)
		}
	}
	m := replies.next(t, 5*time.Second)
	if r := decodeResult(t, m.Payload()); m.Topic() != "replies/sleepy/n/3" || r.Status != "error" ||
		!strings.Contains(r.Error, "asleep and its command queue is full (3 commands)") {
		t.Fatalf("result beyond the queue on %s: %+v", m.Topic(), r)
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("down", reasonQueueFull)); got != 1 {
		t.Errorf("queue_full errors %v, want 1", got)
	}
	dev.wakeCycle()
	for range 3 {
		if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "ok" {
			t.Fatalf("queued command result %+v", r)
		}
	}
	var paths []string
	for _, d := range dev.requests() {
		paths = append(paths, d.path)
	}
	if !slices.Equal(paths, []string{"/n/0", "/n/1", "/n/2"}) {
		t.Fatalf("the device got %v", paths)
	}
}

// TestQueueModeMQTT5MessageExpiry: an MQTT 5 client's message expiry
// (through the embedded broker) is the command's time to live when it is
// shorter than the queue's: the queued and the expired results carry it,
// the request's topic and its correlation data, on its response topic.
func TestQueueModeMQTT5MessageExpiry(t *testing.T) {
	tb := startBridge(t, sleepyRules(""), func(c *Config, o *Options) {
		c.Devices.Awake = 500 * time.Millisecond
		c.Devices.QueueTTL = time.Hour
	})
	got := make(chan *mqttside.Delivery, 10)
	if err := tb.mqtt.Subscribe(t.Context(), "v5/reply", 1, mqttside.HandlerFunc(func(d *mqttside.Delivery) { got <- d })); err != nil {
		t.Fatal(err)
	}
	dev := startSleepyDevice(t, tb.CoAPAddr(), "sleepy", time.Second, time.Second, 0)
	dev.waitAsleep(t)

	sent := time.Now()
	publishMQTT5(t, tb.MQTTAddr(), packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "cmd/sleepy/led",
		PacketID:    1,
		Payload:     []byte("on"),
		Properties: packets.Properties{MessageExpiryInterval: 1, ResponseTopic: "v5/reply",
			CorrelationData: []byte("req-7")},
	})
	next := func() (commandResult, []byte) {
		t.Helper()
		select {
		case d := <-got:
			return decodeResult(t, d.Payload), d.CorrelationData
		case <-time.After(5 * time.Second):
			t.Fatal("no result on the MQTT 5 response topic")
			return commandResult{}, nil
		}
	}
	r, corr := next()
	exp, err := time.Parse(time.RFC3339Nano, r.ExpiresAt)
	if r.Status != "queued" || string(corr) != "req-7" || r.Topic != "cmd/sleepy/led" || err != nil || exp.Sub(sent) > 1500*time.Millisecond {
		t.Fatalf("first result %+v with correlation data %q, want queued for 1s with req-7", r, corr)
	}
	r, corr = next()
	if r.Status != "expired" || string(corr) != "req-7" || r.Topic != "cmd/sleepy/led" {
		t.Fatalf("second result %+v with correlation data %q, want expired with req-7", r, corr)
	}
	if e := time.Since(sent); e > 4*time.Second {
		t.Errorf("expired after %v, want about 1s", e)
	}
}

// publishMQTT5 connects to broker as an MQTT 5 client on a socket of its
// own and sends pk.
func publishMQTT5(t *testing.T, broker string, pk packets.Packet) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", broker, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var buf bytes.Buffer
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
			ClientIdentifier: fmt.Sprintf("v5-%d", time.Now().UnixNano())}}
	if err := connect.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if typ, body := readMQTT(t, conn); typ != packets.Connack || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK: type %d % x", typ, body)
	}
	buf.Reset()
	pk.ProtocolVersion = 5
	pk.Mods.AllowResponseInfo = true // the encoder leaves the response topic out otherwise
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	// The broker has handed the message on once it acknowledges it.
	if typ, body := readMQTT(t, conn); typ != packets.Puback || len(body) < 2 {
		t.Fatalf("PUBACK: type %d % x", typ, body)
	}
}

// readMQTT reads one MQTT control packet: its type and what follows its
// fixed header.
func readMQTT(t *testing.T, r io.Reader) (byte, []byte) {
	t.Helper()
	b := make([]byte, 1)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read packet: %v", err)
	}
	typ := b[0] >> 4
	n, shift := 0, 0
	for { // Remaining Length, a variable byte integer [MQTT-1.5.5]
		if _, err := io.ReadFull(r, b); err != nil {
			t.Fatalf("read length: %v", err)
		}
		n |= int(b[0]&0x7f) << shift
		if b[0]&0x80 == 0 {
			break
		}
		shift += 7
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("read body: %v", err)
	}
	return typ, body
}

// TestStateQueuedCommandsSurviveRestart: with state.dir, a bridge that
// stops keeps the learned device and the commands queued for it (they
// are not answered expired); the next bridge on the same port and dir
// knows the device before it speaks again and sends the commands after
// its next uplink, in order, each ending ok.
func TestStateQueuedCommandsSurviveRestart(t *testing.T) {
	stateDir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", peer.FreeUDPPort(t))
	mod := func(c *Config, o *Options) {
		c.CoAP.Listen = listen
		c.State.Dir = stateDir
		c.Devices.Awake = 500 * time.Millisecond
	}
	first := startBridge(t, sleepyRules(""), mod)
	// In-process, so it hears the results published while the broker
	// stops.
	results := make(chan []byte, 10)
	if err := first.mqtt.Subscribe(t.Context(), "replies/#", 1, mqttside.HandlerFunc(func(d *mqttside.Delivery) { results <- d.Payload })); err != nil {
		t.Fatal(err)
	}
	dev := startSleepyDevice(t, first.CoAPAddr(), "sleepy", time.Second, time.Second, 0)
	dev.waitAsleep(t)
	publishInOrder(t, first.MQTTAddr(), "cmd/sleepy/n/", 3)
	for i := range 3 {
		select {
		case p := <-results:
			if r := decodeResult(t, p); r.Status != "queued" || r.Position != i+1 {
				t.Fatalf("result %d: %+v, want queued", i, r)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no result %d", i)
		}
	}
	first.stop(t)
	select {
	case p := <-results:
		t.Fatalf("a result at shutdown: %s (the commands should have been kept)", p)
	default:
	}
	st, err := readState(filepath.Join(stateDir, stateFileName))
	if err != nil || len(st.Devices) != 1 || len(st.Commands) != 3 {
		t.Fatalf("state file: %d devices, %d commands, %v", len(st.Devices), len(st.Commands), err)
	}

	second := startBridge(t, sleepyRules(""), mod)
	if ld, ok := second.learned.lookup("sleepy"); !ok || ld.Addr.String() != dev.conn.LocalAddr().String() {
		t.Fatalf("restored device %+v %v, want it at %v", ld, ok, dev.conn.LocalAddr())
	}
	if depth := testutil.ToFloat64(second.metrics.queueDepth); depth != 3 {
		t.Fatalf("%v commands queued after the restart, want 3", depth)
	}
	replies := subscribe(t, second.MQTTAddr(), "replies/#", 1)
	dev.wakeCycle()
	for i := range 3 {
		m := replies.next(t, 10*time.Second)
		if r := decodeResult(t, m.Payload()); m.Topic() != fmt.Sprint("replies/sleepy/n/", i) || r.Status != "ok" {
			t.Fatalf("result %d on %s: %+v", i, m.Topic(), r)
		}
	}
	var paths []string
	for _, d := range dev.requests() {
		paths = append(paths, d.path)
	}
	if !slices.Equal(paths, []string{"/n/0", "/n/1", "/n/2"}) {
		t.Fatalf("the device got %v", paths)
	}
}

// TestCommandTimeoutAfterAPushKeepsTheDeviceOnline: a command the device
// does not answer in time, while the device pushed after it was sent, ends
// as a timeout but does not make the device offline: the push is newer
// news. The next command is sent at once, not queued.
func TestCommandTimeoutAfterAPushKeepsTheDeviceOnline(t *testing.T) {
	dev := startDevice(t, "")
	release := make(chan struct{})
	defer close(release)
	dev.mux.HandleFunc("PUT /slow", func(w coapside.ResponseWriter, r *coapside.Request) {
		select { // acts on it too late for the command's timeout
		case <-release:
		case <-r.Context().Done():
		}
	})
	dev.mux.HandleFunc("PUT /fast", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	tb := startBridge(t, sleepyRules(""), withPresence(30*time.Second, time.Minute))
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	push := dev.pusher(t)
	up := func() { t.Helper(); pushOK(t, push, tb.coapURL("/up/d1")) }
	up()
	publish(t, tb.MQTTAddr(), "cmd/d1/slow", 1, false, "x")
	testkit.Eventually(t, 5*time.Second, "the slow command at the device", func() bool { return dev.count() == 1 })
	up() // while the command waits for its answer
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "timeout" {
		t.Fatalf("slow command: %+v, want timeout", r)
	}
	if got := deviceState(t, tb, "d1"); got != "online" {
		t.Errorf("after the timeout d1 is %q, want online: it pushed after the command was sent", got)
	}
	publish(t, tb.MQTTAddr(), "cmd/d1/fast", 1, false, "y")
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "ok" {
		t.Fatalf("next command: %+v, want ok (sent at once)", r)
	}
}

// TestStateRestoredCommandsGoFirst: commands published while the bridge
// was down wait in its session at a remote broker, which delivers them
// right after the next bridge connects. The commands that bridge restores
// from state.dir came before them: the device gets all of them in the
// order they were published, and the later ones are announced queued
// behind the restored ones.
func TestStateRestoredCommandsGoFirst(t *testing.T) {
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	stateDir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", peer.FreeUDPPort(t))
	var remote Config
	useRemoteBroker(&remote, broker.Addr(), "bridge-restore")
	mod := func(c *Config, o *Options) {
		c.MQTT = remote.MQTT
		c.CoAP.Listen = listen
		c.State.Dir = stateDir
		c.Devices.Awake = 500 * time.Millisecond
	}
	replies := subscribe(t, broker.Addr(), "replies/#", 1)
	first := startBridge(t, sleepyRules(""), mod)
	dev := startSleepyDevice(t, first.CoAPAddr(), "sleepy", time.Second, time.Second, 0)
	dev.waitAsleep(t)
	publishInOrder(t, broker.Addr(), "cmd/sleepy/n/", 3)
	for i := range 3 {
		if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "queued" {
			t.Fatalf("result %d: %+v, want queued", i, r)
		}
	}
	first.stop(t)

	// Published while no bridge runs: the broker keeps them in the
	// bridge's session.
	opts := paho.NewClientOptions().AddBroker("tcp://" + broker.Addr()).SetClientID("late-publisher")
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	for i := 3; i < 6; i++ {
		if tok := c.Publish(fmt.Sprint("cmd/sleepy/n/", i), 1, false, fmt.Sprint(i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	c.Disconnect(100)

	startBridge(t, sleepyRules(""), mod)
	for i := 3; i < 6; i++ {
		if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "queued" || r.Position != i+1 {
			t.Fatalf("result of the command published while the bridge was down: %+v, want queued at %d", r, i+1)
		}
	}
	dev.wakeCycle()
	testkit.Eventually(t, 15*time.Second, "every command carried out", func() bool { return len(dev.requests()) >= 6 })
	var paths []string
	for _, d := range dev.requests() {
		paths = append(paths, d.path)
	}
	if want := []string{"/n/0", "/n/1", "/n/2", "/n/3", "/n/4", "/n/5"}; !slices.Equal(paths, want) {
		t.Fatalf("the device got %v, want %v", paths, want)
	}
}

// TestQueueModeCommandBehindAnUnansweredOneAnnouncedAtOnce: a command
// that comes while the device's awake window has closed and an earlier
// command still waits for its answer cannot be sent in this window: it is
// announced queued at once, not only once the earlier one timed out.
func TestQueueModeCommandBehindAnUnansweredOneAnnouncedAtOnce(t *testing.T) {
	dev := startDevice(t, "")
	release := make(chan struct{})
	defer close(release)
	dev.mux.HandleFunc("PUT /slow", func(w coapside.ResponseWriter, r *coapside.Request) {
		select { // the radio went off before it answered
		case <-release:
		case <-r.Context().Done():
		}
	})
	const awake = 300 * time.Millisecond
	presence := withPresence(awake, time.Minute)
	tb := startBridge(t, sleepyRules(""), func(c *Config, o *Options) {
		presence(c, o)
		o.CoAP = coapside.EndpointOptions{} // RFC 7252 timing: the rule's 3 s timeout ends the exchange
	})
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	pushOK(t, dev.pusher(t), tb.coapURL("/up/d1"))
	publish(t, tb.MQTTAddr(), "cmd/d1/slow", 1, false, "x")
	testkit.Eventually(t, 5*time.Second, "the slow command at the device", func() bool { return dev.count() == 1 })
	time.Sleep(2 * awake) // asleep now
	publish(t, tb.MQTTAddr(), "cmd/d1/led", 1, false, "on")
	m := replies.next(t, time.Second) // the slow one times out after 3 s
	if r := decodeResult(t, m.Payload()); m.Topic() != "replies/d1/led" || r.Status != "queued" || r.Position != 1 {
		t.Fatalf("first result %s %+v, want the second command queued at 1", m.Topic(), r)
	}
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "timeout" {
		t.Fatalf("slow command: %+v, want timeout", r)
	}
	replies.none(t, 500*time.Millisecond) // the queued one waits for the next uplink
}

// TestStateRestoredWithRetainedCommandStored: the embedded broker keeps a
// retained command on disk (persistence_dir) and the bridge keeps it
// queued in state.dir. At the restart the broker sends its stored copy as
// it starts, before the restored commands are queued again: the copy is
// counted, not run, and does not wait for them (which would hold the
// start); the restored command reaches the device once.
func TestStateRestoredWithRetainedCommandStored(t *testing.T) {
	stateDir, brokerDir := t.TempDir(), t.TempDir()
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := probe.LocalAddr().String()
	probe.Close()
	mod := func(c *Config, o *Options) {
		c.CoAP.Listen = listen
		c.State.Dir = stateDir
		c.MQTT.Embedded.PersistenceDir = brokerDir
		c.Devices.Awake = 500 * time.Millisecond
	}
	first := startBridge(t, sleepyRules(""), mod)
	results := make(chan []byte, 10)
	if err := first.mqtt.Subscribe(t.Context(), "replies/#", 1, mqttside.HandlerFunc(func(d *mqttside.Delivery) { results <- d.Payload })); err != nil {
		t.Fatal(err)
	}
	dev := startSleepyDevice(t, first.CoAPAddr(), "sleepy", time.Second, time.Second, 0)
	dev.waitAsleep(t)
	publish(t, first.MQTTAddr(), "cmd/sleepy/n/0", 1, true, "x")
	select {
	case p := <-results:
		if r := decodeResult(t, p); r.Status != "queued" {
			t.Fatalf("result %+v, want queued", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no queued result")
	}
	first.stop(t)

	second := startBridge(t, sleepyRules(""), mod)
	if n := testutil.ToFloat64(second.metrics.errors.WithLabelValues("down", reasonRetained)); n != 1 {
		t.Errorf("retained copies counted: %v, want 1", n)
	}
	replies := subscribe(t, second.MQTTAddr(), "replies/#", 1)
	dev.wakeCycle()
	if r := decodeResult(t, replies.next(t, 10*time.Second).Payload()); r.Status != "ok" {
		t.Fatalf("restored command: %+v, want ok", r)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(dev.requests()); n != 1 {
		t.Errorf("the device got %d commands, want 1", n)
	}
}
