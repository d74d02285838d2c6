package mqttside

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	paho "github.com/eclipse/paho.mqtt.golang"
)

func newTestEmbedded(t *testing.T, o EmbeddedOptions) *Embedded {
	t.Helper()
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	e, err := NewEmbedded(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	return e
}

func TestEmbeddedInlinePubSub(t *testing.T) {
	checkLeaks(t)
	var events []State
	e := newTestEmbedded(t, EmbeddedOptions{OnEvent: func(ev Event) { events = append(events, ev.State) }})
	if e.State() != StateConnected || e.Addr() == "" || strings.HasSuffix(e.Addr(), ":0") {
		t.Fatalf("state %v addr %q", e.State(), e.Addr())
	}
	ctx := ctxT(t, 5*time.Second)
	col := newCollector()
	if err := e.Subscribe(ctx, "in/+/v", 1, col); err != nil {
		t.Fatal(err)
	}
	for qos := range byte(3) {
		m := Message{Topic: "in/dev/v", Payload: []byte{'0' + qos}, QoS: qos,
			ResponseTopic: "reply/dev", CorrelationData: []byte{7}, ContentType: "text/plain",
			MessageExpiry: 1500 * time.Millisecond}
		if err := e.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Inline delivery is synchronous: no waiting needed.
	ds := col.deliveries()
	if len(ds) != 3 {
		t.Fatalf("%d deliveries, want 3", len(ds))
	}
	for i, d := range ds {
		wantQoS := min(byte(i), 1)
		if string(d.Payload) != fmt.Sprint(i) || d.QoS != wantQoS || d.ResponseTopic != "reply/dev" ||
			string(d.CorrelationData) != "\x07" || d.ContentType != "text/plain" || d.Filter != "in/+/v" ||
			d.MessageExpiry != 2*time.Second { // whole seconds on the wire, rounded up
			t.Errorf("delivery %d: %+v", i, d.Message)
		}
		d.Ack() // no-op, must not panic
	}

	// Retained message reaches a later subscription.
	if err := e.Publish(ctx, Message{Topic: "ret/a", Payload: []byte("kept"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	late := newCollector()
	if err := e.Subscribe(ctx, "ret/#", 0, late); err != nil {
		t.Fatal(err)
	}
	if ds := late.deliveries(); len(ds) != 1 || string(ds[0].Payload) != "kept" || !ds[0].Retain {
		t.Fatalf("retained deliveries %v", late.payloads())
	}

	if err := e.Unsubscribe(ctx, "in/+/v"); err != nil {
		t.Fatal(err)
	}
	if err := e.Publish(ctx, Message{Topic: "in/dev/v", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if col.count() != 3 {
		t.Fatal("delivered after Unsubscribe")
	}
	st := e.Stats()
	if st.Published != 5 || st.Received != 4 || !st.Connected {
		t.Fatalf("stats %+v", st)
	}

	// Bad input.
	for _, m := range []Message{{Topic: "a/#"}, {Topic: "$SYS/x"}, {Topic: "a//b"}, {Topic: "a", QoS: 5},
		{Topic: "a", Payload: make([]byte, DefaultMaxPayload+1)}} {
		if err := e.Publish(ctx, m); err == nil {
			t.Errorf("Publish(%q qos %d, %d bytes) accepted", m.Topic, m.QoS, len(m.Payload))
		}
	}
	if err := e.Subscribe(ctx, "a/#/b", 0, col); !errors.Is(err, ErrInvalidFilter) {
		t.Errorf("bad filter: %v", err)
	}

	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := e.Publish(ctx, Message{Topic: "a"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %v", err)
	}
	if fmt.Sprint(events) != fmt.Sprint([]State{StateConnected, StateClosed}) {
		t.Errorf("events %v", events)
	}
}

// TestEmbeddedExternalClients drives the embedded broker with the
// mosquitto command-line clients and a Paho client.
func TestEmbeddedExternalClients(t *testing.T) {
	checkLeaks(t)
	e := newTestEmbedded(t, EmbeddedOptions{})
	host, port := splitAddr(t, e.Addr())
	ctx := ctxT(t, 10*time.Second)

	t.Run("mosquitto_sub receives inline publishes", func(t *testing.T) {
		subBin := peer.Require(t, "mosquitto_sub")
		_ = subBin
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			out, err := runPeer(t, 10*time.Second, "mosquitto_sub", "-h", host, "-p", port, "-i", "ext-sub",
				"-t", "ext/#", "-q", "1", "-C", "3", "-v")
			done <- result{out, err}
		}()
		testkit.Eventually(t, 5*time.Second, "mosquitto_sub subscribed", func() bool {
			return e.srv.Topics.Subscribers("ext/x").Subscriptions["ext-sub"].Filter != ""
		})
		for i := range 3 {
			if err := e.Publish(ctx, Message{Topic: "ext/x", Payload: fmt.Appendf(nil, "v%d", i), QoS: 1}); err != nil {
				t.Fatal(err)
			}
		}
		r := <-done
		if r.err != nil {
			t.Fatalf("mosquitto_sub: %v: %s", r.err, r.out)
		}
		if want := "ext/x v0\next/x v1\next/x v2\n"; r.out != want {
			t.Fatalf("mosquitto_sub printed %q, want %q", r.out, want)
		}
	})

	t.Run("mosquitto_pub reaches inline subscription", func(t *testing.T) {
		col := newCollector()
		if err := e.Subscribe(ctx, "from-pub/#", 2, col); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"0", "1", "2"} {
			out, err := runPeer(t, 10*time.Second, "mosquitto_pub", "-h", host, "-p", port,
				"-t", "from-pub/q"+q, "-q", q, "-m", "hello"+q)
			if err != nil {
				t.Fatalf("mosquitto_pub: %v: %s", err, out)
			}
		}
		testkit.Eventually(t, 5*time.Second, "3 deliveries", func() bool { return col.count() == 3 })
		if got := strings.Join(col.payloads(), ","); got != "hello0,hello1,hello2" {
			t.Fatalf("got %s", got)
		}
	})

	t.Run("paho client pub and sub", func(t *testing.T) {
		c := rawClient(t, "tcp://"+e.Addr(), "ext-paho", true, nil)
		got := make(chan paho.Message, 4)
		waitTok(t, c.Subscribe("to-paho/#", 1, func(_ paho.Client, m paho.Message) { got <- m }))
		if err := e.Publish(ctx, Message{Topic: "to-paho/a", Payload: []byte("x"), QoS: 1}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m.Topic() != "to-paho/a" || string(m.Payload()) != "x" || m.Qos() != 1 {
				t.Fatalf("paho got %s %q qos %d", m.Topic(), m.Payload(), m.Qos())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("paho client got nothing")
		}
		col := newCollector()
		if err := e.Subscribe(ctx, "from-paho", 1, col); err != nil {
			t.Fatal(err)
		}
		waitTok(t, c.Publish("from-paho", 1, false, "y"))
		testkit.Eventually(t, 5*time.Second, "inline got paho publish", func() bool { return col.count() == 1 })
	})

	t.Run("$SYS topics", func(t *testing.T) {
		c := rawClient(t, "tcp://"+e.Addr(), "sys-paho", true, nil)
		got := make(chan string, 1)
		waitTok(t, c.Subscribe("$SYS/broker/version", 0, func(_ paho.Client, m paho.Message) {
			select {
			case got <- string(m.Payload()):
			default:
			}
		}))
		select {
		case v := <-got:
			if v == "" {
				t.Fatal("empty $SYS/broker/version")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no $SYS/broker/version")
		}
	})

	t.Run("oversized packet from client refused", func(t *testing.T) {
		small := newTestEmbedded(t, EmbeddedOptions{MaxPayload: 1024})
		col := newCollector()
		if err := small.Subscribe(ctx, "big", 0, col); err != nil {
			t.Fatal(err)
		}
		lost := make(chan struct{})
		c := rawClient(t, "tcp://"+small.Addr(), "big-pub", true, func(o *paho.ClientOptions) {
			o.SetAutoReconnect(false)
			o.SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
		})
		c.Publish("big", 0, false, make([]byte, 4096))
		select {
		case <-lost:
		case <-time.After(5 * time.Second):
			t.Fatal("client sending an oversized packet was not disconnected")
		}
		if col.count() != 0 {
			t.Fatal("oversized payload delivered")
		}
		if small.Stats().Invalid != 1 {
			t.Errorf("oversized publish not counted: %+v", small.Stats())
		}
	})
}

func splitAddr(t *testing.T, addr string) (host, port string) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("bad addr %q", addr)
	}
	return addr[:i], addr[i+1:]
}

// TestEmbeddedWebSocket connects the remote client to the embedded
// broker's WebSocket listener: both ends of ws:// are exercised.
func TestEmbeddedWebSocket(t *testing.T) {
	checkLeaks(t)
	e := newTestEmbedded(t, EmbeddedOptions{WebSocket: "127.0.0.1:0"})
	if e.WebSocketAddr() == "" || strings.HasSuffix(e.WebSocketAddr(), ":0") {
		t.Fatalf("websocket addr %q", e.WebSocketAddr())
	}
	ctx := ctxT(t, 10*time.Second)
	inline := newCollector()
	if err := e.Subscribe(ctx, "ws/up", 1, inline); err != nil {
		t.Fatal(err)
	}
	r := newTestRemote(t, RemoteOptions{Broker: "ws://" + e.WebSocketAddr() + "/mqtt"})
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	down := newCollector()
	if err := r.Subscribe(ctx, "ws/down", 1, down); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("b", 100_000) // spans many WebSocket frames and reads
	for i, p := range []string{"a", big, "c"} {
		if err := r.Publish(ctx, Message{Topic: "ws/up", Payload: []byte(p), QoS: byte(i % 3)}); err != nil {
			t.Fatal(err)
		}
		if err := e.Publish(ctx, Message{Topic: "ws/down", Payload: []byte(p), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 5*time.Second, "both directions", func() bool { return inline.count() == 3 && down.count() == 3 })
	for _, c := range []*collector{inline, down} {
		if ps := c.payloads(); ps[0] != "a" || ps[1] != big || ps[2] != "c" {
			t.Errorf("payloads out of order or damaged: %d %d %d bytes", len(ps[0]), len(ps[1]), len(ps[2]))
		}
	}
}

func TestEmbeddedPersistence(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	e := newTestEmbedded(t, EmbeddedOptions{PersistenceDir: dir})
	ctx := ctxT(t, 5*time.Second)
	if err := e.Publish(ctx, Message{Topic: "persist/r", Payload: []byte("survives"), Retain: true, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	e2 := newTestEmbedded(t, EmbeddedOptions{PersistenceDir: dir})
	col := newCollector()
	if err := e2.Subscribe(ctx, "persist/#", 1, col); err != nil {
		t.Fatal(err)
	}
	if got := col.payloads(); len(got) != 1 || got[0] != "survives" {
		t.Fatalf("after restart retained = %v, want [survives]", got)
	}
	if _, err := os.Stat(filepath.Join(dir, persistenceFile)); err != nil {
		t.Fatal(err)
	}
}

// TestEmbeddedPersistenceSubscribeBeforeStart: a subscription made before
// Start, as the bridge makes its rules' (so that nothing published right
// after the listeners open is missed), is sent the retained messages the
// broker reads from its store at Start, marked Retain, as one made after.
func TestEmbeddedPersistenceSubscribeBeforeStart(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	e := newTestEmbedded(t, EmbeddedOptions{PersistenceDir: dir})
	ctx := ctxT(t, 5*time.Second)
	if err := e.Publish(ctx, Message{Topic: "persist/r", Payload: []byte("survives"), Retain: true, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	e2, err := NewEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", PersistenceDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e2.Close(context.Background()) })
	col := newCollector()
	if err := e2.Subscribe(ctx, "persist/#", 1, col); err != nil {
		t.Fatal(err)
	}
	if err := e2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ds := col.deliveries()
	if len(ds) != 1 || string(ds[0].Payload) != "survives" || !ds[0].Retain {
		t.Fatalf("after restart, a subscription made before Start got %d deliveries (%v), want the stored one with Retain", len(ds), col.payloads())
	}
	if err := e2.Publish(ctx, Message{Topic: "persist/r", Payload: []byte("live"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	if ds := col.deliveries(); len(ds) != 2 || string(ds[1].Payload) != "live" || ds[1].Retain {
		t.Fatalf("a live publish after the replay: %v, want it without Retain", col.payloads())
	}
}

func TestEmbeddedStartErrors(t *testing.T) {
	checkLeaks(t)
	busy := newTestEmbedded(t, EmbeddedOptions{})
	e, err := NewEmbedded(EmbeddedOptions{Listen: busy.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctxT(t, 5*time.Second)); err == nil || !strings.Contains(err.Error(), busy.Addr()) {
		t.Fatalf("Start on a busy port = %v, want an error naming the address", err)
	}
	if _, err := NewEmbedded(EmbeddedOptions{AuthFile: filepath.Join(t.TempDir(), "missing.toml")}); !errors.Is(err, ErrAuthFile) {
		t.Fatalf("missing auth file: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("[[user]]\nname = \"x\"\npassword = \"plain\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewEmbedded(EmbeddedOptions{AuthFile: bad}); !errors.Is(err, ErrAuthFile) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("plain-text password accepted or error lacks the file name: %v", err)
	}
}

func TestEmbeddedSubscribeBeforeStart(t *testing.T) {
	checkLeaks(t)
	e, err := NewEmbedded(EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	col := newCollector()
	if err := e.Subscribe(context.Background(), "early/#", 0, col); err != nil {
		t.Fatal(err)
	}
	if err := e.Publish(context.Background(), Message{Topic: "early/x"}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Publish before Start = %v, want ErrNotStarted", err)
	}
	if err := e.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if e.Addr() != "" {
		t.Errorf("TCP listener without Listen: %q", e.Addr())
	}
	if err := e.Publish(context.Background(), Message{Topic: "early/x", Payload: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	if got := col.payloads(); len(got) != 1 || got[0] != "y" {
		t.Fatalf("got %v", got)
	}
}

// TestRemoteSecureWebSocket runs wss:// from the remote client to the
// embedded broker's WebSocket listener through a TLS-terminating relay.
func TestRemoteSecureWebSocket(t *testing.T) {
	checkLeaks(t)
	e := newTestEmbedded(t, EmbeddedOptions{WebSocket: "127.0.0.1:0"})
	ca, cert, key := testCA(t, t.TempDir())
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	p := newProxyOn(t, ln, e.WebSocketAddr())
	ctx := ctxT(t, 10*time.Second)
	inline := newCollector()
	if err := e.Subscribe(ctx, "wss/up", 1, inline); err != nil {
		t.Fatal(err)
	}
	r := newTestRemote(t, RemoteOptions{Broker: "wss://" + p.ln.Addr().String() + "/mqtt", TLS: TLSOptions{CAFile: ca}})
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Publish(ctx, Message{Topic: "wss/up", Payload: []byte("over tls"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	// mochi acknowledges a QoS 1 publish before routing it: wait.
	testkit.Eventually(t, 5*time.Second, "delivery", func() bool { return inline.count() == 1 })
	if got := inline.payloads(); got[0] != "over tls" {
		t.Fatalf("got %v", got)
	}
}

// TestEmbeddedRetainMarksStoredMessagesOnly: an inline subscription sees
// Retain on the stored messages the broker sends because it subscribed,
// and not on a live publish to the established subscription, whatever the
// publisher set [MQTT-3.3.1-9], as a remote broker delivers them.
func TestEmbeddedRetainMarksStoredMessagesOnly(t *testing.T) {
	checkLeaks(t)
	e := newTestEmbedded(t, EmbeddedOptions{})
	ctx := ctxT(t, 5*time.Second)
	if err := e.Publish(ctx, Message{Topic: "r/stored", Payload: []byte("old"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	if err := e.Subscribe(ctx, "r/#", 1, col); err != nil {
		t.Fatal(err)
	}
	if err := e.Publish(ctx, Message{Topic: "r/live", Payload: []byte("new"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	// An external client's retained publish, live too.
	pc := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + e.Addr()).SetClientID("retain-pub"))
	if tok := pc.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("connect:", tok.Error())
	}
	defer pc.Disconnect(0)
	if tok := pc.Publish("r/ext", 1, true, "ext"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("publish:", tok.Error())
	}
	testkit.Eventually(t, 5*time.Second, "three deliveries", func() bool { return col.count() == 3 })
	for _, d := range col.deliveries() {
		if want := d.Topic == "r/stored"; d.Retain != want {
			t.Errorf("%s delivered with Retain %v, want %v", d.Topic, d.Retain, want)
		}
	}
}
