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

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"
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
			ResponseTopic: "reply/dev", CorrelationData: []byte{7}, ContentType: "text/plain"}
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
			string(d.CorrelationData) != "\x07" || d.ContentType != "text/plain" || d.Filter != "in/+/v" {
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
		subBin := peer(t, "mosquitto_sub")
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
		eventually(t, 5*time.Second, "mosquitto_sub subscribed", func() bool {
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
		eventually(t, 5*time.Second, "3 deliveries", func() bool { return col.count() == 3 })
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
		eventually(t, 5*time.Second, "inline got paho publish", func() bool { return col.count() == 1 })
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

func writeAuthFile(t *testing.T, users map[string]string, body string) string {
	t.Helper()
	var b strings.Builder
	for name, pw := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "[[user]]\nname = %q\npassword = %q\npublish = [\"sensors/{username}/#\"]\n"+
			"subscribe = [\"cmd/{username}/#\"]\ndeny = [\"sensors/{username}/secret\"]\n\n", name, h)
	}
	b.WriteString(body)
	p := filepath.Join(t.TempDir(), "auth.toml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEmbeddedACL checks authentication and topic allow/deny with an auth
// file, using Paho clients over TCP.
func TestEmbeddedACL(t *testing.T) {
	checkLeaks(t)
	authFile := writeAuthFile(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"}, "")
	var logs syncBuffer
	e := newTestEmbedded(t, EmbeddedOptions{AuthFile: authFile, Logger: testLogger(&logs)})
	url := "tcp://" + e.Addr()
	ctx := ctxT(t, 10*time.Second)

	connect := func(id, user, pw string) error {
		o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pw).
			SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
		c := paho.NewClient(o)
		tok := c.Connect()
		tok.WaitTimeout(5 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(50)
		}
		return tok.Error()
	}
	for _, tc := range []struct {
		name, user, pw string
		ok             bool
	}{
		{"right password", "alice", "alice-pw", true},
		{"wrong password", "alice", "bob-pw", false},
		{"unknown user", "mallory", "x", false},
		{"anonymous without [anonymous]", "", "", false},
	} {
		if err := connect("acl-"+strings.ReplaceAll(tc.name, " ", "-"), tc.user, tc.pw); (err == nil) != tc.ok {
			t.Errorf("%s: connect err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	if strings.Contains(logs.String(), "bob-pw") {
		t.Error("password in logs")
	}

	inbox := newCollector()
	if err := e.Subscribe(ctx, "sensors/#", 1, inbox); err != nil {
		t.Fatal(err)
	}
	alice := rawClient(t, url, "alice-1", true, func(o *paho.ClientOptions) {
		o.SetUsername("alice").SetPassword("alice-pw")
	})
	waitTok(t, alice.Publish("sensors/bob/t", 0, false, "forged"))   // denied: not her topic
	waitTok(t, alice.Publish("sensors/alice/secret", 0, false, "s")) // denied by deny pattern
	waitTok(t, alice.Publish("sensors/alice/t", 0, false, "ok"))     // allowed
	eventually(t, 5*time.Second, "allowed publish", func() bool { return inbox.count() >= 1 })
	if got := strings.Join(inbox.payloads(), ","); got != "ok" {
		t.Errorf("inline subscriber got %q, want only \"ok\"", got)
	}

	// Paho routes each message to every matching handler it registered,
	// refused subscriptions included, so each subscription gets its own.
	got := make(chan string, 4)
	wideGot := make(chan string, 4)
	ok := alice.Subscribe("cmd/alice/#", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() })
	waitTok(t, ok)
	if code := ok.(*paho.SubscribeToken).Result()["cmd/alice/#"]; code != 1 {
		t.Errorf("allowed subscription return code %#x", code)
	}
	wide := alice.Subscribe("cmd/#", 1, func(_ paho.Client, m paho.Message) { wideGot <- m.Topic() })
	waitTok(t, wide)
	if code := wide.(*paho.SubscribeToken).Result()["cmd/#"]; code != 0x80 {
		t.Errorf("subscription wider than the ACL: return code %#x, want 0x80", code)
	}
	for _, topic := range []string{"cmd/bob/x", "cmd/alice/x"} {
		if err := e.Publish(ctx, Message{Topic: topic, QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case topic := <-got:
		if topic != "cmd/alice/x" {
			t.Errorf("alice received %s", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alice got no command")
	}
	deadline := time.After(100 * time.Millisecond)
	for done := false; !done; {
		select {
		case topic := <-got:
			t.Errorf("unexpected extra delivery %s", topic)
		case topic := <-wideGot:
			if topic != "cmd/alice/x" { // the same message, routed by Paho to both handlers
				t.Errorf("refused subscription delivered %s", topic)
			}
		case <-deadline:
			done = true
		}
	}

	// mosquitto_pub with bad credentials fails.
	host, port := splitAddr(t, e.Addr())
	if out, err := runPeer(t, 10*time.Second, "mosquitto_pub", "-h", host, "-p", port,
		"-u", "bob", "-P", "wrong", "-t", "sensors/bob/x", "-m", "x"); err == nil {
		t.Errorf("mosquitto_pub with a wrong password succeeded: %s", out)
	}
}

// TestEmbeddedDefaultAuthLoopbackOnly checks the default without an auth
// file: anonymous clients from loopback connect, others are refused.
func TestEmbeddedDefaultAuthLoopbackOnly(t *testing.T) {
	checkLeaks(t)
	e := newTestEmbedded(t, EmbeddedOptions{})
	c := rawClient(t, "tcp://"+e.Addr(), "loop", true, nil) // anonymous over 127.0.0.1
	waitTok(t, c.Publish("x/y", 1, false, "z"))
	acl := DefaultACL()
	for remote, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.8.9.1:1": true, "[::1]:5000": true, "[::ffff:127.0.0.1]:1": true,
		"192.0.2.7:5000": false, "[2001:db8::1]:1": false, "10.0.0.1:1": false, "garbage": false,
	} {
		if got := acl.Authenticate("", nil, remote); got != want {
			t.Errorf("Authenticate(anonymous from %s) = %v, want %v", remote, got, want)
		}
		if got := acl.Authenticate("someone", []byte("pw"), remote); got != want {
			t.Errorf("Authenticate(someone from %s) = %v, want %v", remote, got, want)
		}
	}
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
	eventually(t, 5*time.Second, "both directions", func() bool { return inline.count() == 3 && down.count() == 3 })
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
	if got := inline.payloads(); len(got) != 1 || got[0] != "over tls" {
		t.Fatalf("got %v", got)
	}
}
