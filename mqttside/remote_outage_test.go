package mqttside

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestRemoteBrokerKilledMidStream kills the broker with SIGKILL while the
// bridge is publishing a QoS 1 stream, restarts it on the same port, and
// checks that no message the client accepted is lost by the client: every
// message not yet acknowledged by the killed broker reaches a subscriber,
// in order. (Messages the killed broker had acknowledged but not yet
// passed on or saved are the broker's loss; they are counted and logged.)
func TestRemoteBrokerKilledMidStream(t *testing.T) {
	checkLeaks(t)
	m := peer.StartMosquitto(t, 0, "allow_anonymous true\npersistence true\nautosave_interval 1\n")

	var (
		mu    sync.Mutex
		seen  = map[string]int{}
		order []string // first occurrences
	)
	sub := rawClient(t, m.URL(), "stream-sub", false, nil)
	waitTok(t, sub.Subscribe("stream/#", 1, func(_ paho.Client, msg paho.Message) {
		mu.Lock()
		p := string(msg.Payload())
		if seen[p] == 0 {
			order = append(order, p)
		}
		seen[p]++
		mu.Unlock()
	}))
	// Let mosquitto save the subscriber's session, so that the restarted
	// broker queues messages for it until it is back; without it the
	// restarted broker drops every message sent after the kill. A save
	// written after the SUBACK arrived includes the subscription.
	m.WaitSaved(t, time.Now(), 10*time.Second)

	r := newTestRemote(t, RemoteOptions{Broker: m.URL(), BufferSize: 1000, MinBackoff: 100 * time.Millisecond})
	if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}

	const n = 400
	type result struct {
		err error
		at  time.Time
	}
	results := make([]result, n)
	half := make(chan struct{})
	var pubs, waiters sync.WaitGroup
	pubs.Add(1)
	go func() {
		defer pubs.Done()
		for i := range n {
			if i == n/3 {
				close(half)
			}
			// Accept in order without waiting for the broker, so several
			// messages are in flight when the broker dies.
			p, err := r.enqueue(Message{Topic: "stream/a", Payload: fmt.Appendf(nil, "%04d", i), QoS: 1})
			if err != nil {
				results[i] = result{err: err, at: time.Now()}
				continue
			}
			waiters.Add(1)
			go func() {
				defer waiters.Done()
				err := <-p.done
				results[i] = result{err: err, at: time.Now()}
			}()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	<-half
	m.Kill()
	testkit.Eventually(t, 5*time.Second, "client notices the outage", func() bool { return r.State() == StateDisconnected })
	time.Sleep(500 * time.Millisecond)
	restartAt := time.Now()
	m.Restart()
	pubs.Wait()
	waited := make(chan struct{})
	go func() { waiters.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		t.Fatalf("publishes not settled; stats %+v", r.Stats())
	}

	ackedByKilled := 0
	for i, res := range results {
		if res.err != nil && !errors.Is(res.err, ErrPending) {
			t.Errorf("publish %d: %v", i, res.err)
		}
		if res.err == nil && res.at.Before(restartAt) {
			ackedByKilled++
		}
	}
	missing := func() (mustHave, brokerLost []int) {
		mu.Lock()
		defer mu.Unlock()
		for i := range n {
			if seen[fmt.Sprintf("%04d", i)] > 0 {
				continue
			}
			if results[i].err == nil && results[i].at.Before(restartAt) {
				brokerLost = append(brokerLost, i)
			} else {
				mustHave = append(mustHave, i)
			}
		}
		return mustHave, brokerLost
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mustHave, _ := missing()
		if len(mustHave) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("messages lost by the client: %v (stats %+v)", mustHave, r.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // let stragglers from the restored session arrive
	_, brokerLost := missing()

	st := r.Stats()
	if st.Failed != 0 || st.Refused != 0 || st.DroppedQoS0 != 0 || st.Reconnects < 1 || st.Buffered == 0 {
		t.Errorf("stats %+v: want no failures/refusals/drops, a reconnect and buffered messages", st)
	}
	mu.Lock()
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	// A message delivered twice was in flight when the broker died: the
	// killed broker may have saved it to its database before it crashed
	// and deliver that copy from its restored queue, after messages that
	// reached it later. Every other message keeps its order.
	last := ""
	for _, p := range order {
		if seen[p] > 1 {
			continue
		}
		if p < last {
			t.Errorf("order broken: %s after %s", p, last)
			break
		}
		last = p
	}
	mu.Unlock()
	t.Logf("%d messages: %d acknowledged by the killed broker, %d of those lost by it (%v); %d duplicates; buffered %d",
		n, ackedByKilled, len(brokerLost), brokerLost, dups, st.Buffered)
}

// TestRemoteManualAckRedelivery checks that a QoS 1 message the handler
// never acknowledged is redelivered after a reconnect, and an acknowledged
// one is not.
func TestRemoteManualAckRedelivery(t *testing.T) {
	checkLeaks(t)
	m := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	p := newProxy(t, fmt.Sprintf("127.0.0.1:%d", m.Port))
	r := newTestRemote(t, RemoteOptions{Broker: p.URL()})
	if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	col.noAck = func(d *Delivery) bool { return string(d.Payload) == "hold" && !d.Duplicate }
	if err := r.Subscribe(ctxT(t, 5*time.Second), "ack/#", 1, col); err != nil {
		t.Fatal(err)
	}
	pub := rawClient(t, m.URL(), "ack-pub", true, nil)
	waitTok(t, pub.Publish("ack/x", 1, false, "hold"))
	waitTok(t, pub.Publish("ack/x", 1, false, "ok"))
	testkit.Eventually(t, 5*time.Second, "first deliveries", func() bool { return col.count() >= 2 })
	// A SUBSCRIBE round trip on the same connection: the PUBACK for "ok",
	// queued before it, has reached the broker when the SUBACK is back.
	if err := r.Subscribe(ctxT(t, 5*time.Second), "ack-sync", 1, newCollector()); err != nil {
		t.Fatal(err)
	}

	p.Cut() // network failure: the broker keeps the session
	testkit.Eventually(t, 5*time.Second, "reconnect", func() bool { return r.Stats().Reconnects >= 1 && r.State() == StateConnected })
	waitTok(t, pub.Publish("ack/x", 1, false, "after"))
	testkit.Eventually(t, 5*time.Second, "redelivery and marker", func() bool {
		ps := strings.Join(col.payloads(), ",")
		return strings.Count(ps, "hold") >= 2 && strings.Contains(ps, "after")
	})
	counts := map[string]int{}
	for _, d := range col.deliveries() {
		counts[string(d.Payload)]++
		if string(d.Payload) == "hold" && counts["hold"] == 2 && !d.Duplicate {
			t.Error("redelivered message lacks the DUP flag")
		}
	}
	if counts["hold"] != 2 || counts["ok"] != 1 || counts["after"] != 1 {
		t.Errorf("deliveries %v: want hold twice (unacked, redelivered), ok and after once", counts)
	}
}

// TestRemoteStatusAndLastWill checks the retained status topic: "online"
// after connecting, "offline" from the Last Will when the connection dies,
// and "offline" on a clean Close.
func TestRemoteStatusAndLastWill(t *testing.T) {
	checkLeaks(t)
	m := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	p := newProxy(t, fmt.Sprintf("127.0.0.1:%d", m.Port))
	var (
		mu     sync.Mutex
		status []string
	)
	sub := rawClient(t, m.URL(), "status-sub", true, nil)
	waitTok(t, sub.Subscribe("bridge-x/status", 1, func(_ paho.Client, msg paho.Message) {
		mu.Lock()
		status = append(status, string(msg.Payload()))
		mu.Unlock()
	}))
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(status) == 0 {
			return ""
		}
		return status[len(status)-1]
	}
	r := newTestRemote(t, RemoteOptions{Broker: p.URL(), StatusTopic: "bridge-x/status", KeepAlive: 2 * time.Second})
	if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "online", func() bool { return last() == "online" })
	p.Close() // connection dies and cannot come back
	testkit.Eventually(t, 10*time.Second, "last will offline", func() bool { return last() == "offline" })
	if err := r.Close(ctxT(t, 2*time.Second)); err != nil {
		t.Fatal(err)
	}

	r2 := newTestRemote(t, RemoteOptions{Broker: m.URL(), ClientID: "bridge-y"})
	if err := r2.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := r2.Close(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// A newcomer sees the retained status of the closed client.
	got := make(chan string, 4)
	late := rawClient(t, m.URL(), "late-sub", true, nil)
	waitTok(t, late.Subscribe("bridge-y/status", 1, func(_ paho.Client, msg paho.Message) { got <- string(msg.Payload()) }))
	select {
	case s := <-got:
		if s != "offline" {
			t.Errorf("retained status after Close = %q, want offline", s)
		}
	case <-time.After(5 * time.Second):
		t.Error("no retained status after Close")
	}
}

func TestRemoteTLS(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	ca, cert, key := testCA(t, dir)
	m := peer.StartMosquitto(t, 0, fmt.Sprintf("allow_anonymous true\ncafile %s\ncertfile %s\nkeyfile %s\n", ca, cert, key))
	url := fmt.Sprintf("ssl://127.0.0.1:%d", m.Port)

	t.Run("verified", func(t *testing.T) {
		for _, scheme := range []string{"ssl", "tls", "mqtts"} {
			r := newTestRemote(t, RemoteOptions{Broker: strings.Replace(url, "ssl", scheme, 1),
				ClientID: "tls-" + scheme, TLS: TLSOptions{CAFile: ca, ServerName: "localhost"}})
			if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
				t.Fatalf("%s: %v", scheme, err)
			}
			col := newCollector()
			if err := r.Subscribe(ctxT(t, 5*time.Second), "tls/t", 1, col); err != nil {
				t.Fatal(err)
			}
			if err := r.Publish(ctxT(t, 5*time.Second), Message{Topic: "tls/t", Payload: []byte("secure"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, 5*time.Second, "tls delivery", func() bool { return col.count() == 1 })
		}
	})
	t.Run("unknown CA refused", func(t *testing.T) {
		r := newTestRemote(t, RemoteOptions{Broker: url})
		err := r.Start(ctxT(t, 5*time.Second))
		if !errors.Is(err, ErrBrokerRefused) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Start = %v, want a certificate refusal", err)
		}
	})
	t.Run("wrong server name refused", func(t *testing.T) {
		r := newTestRemote(t, RemoteOptions{Broker: url, TLS: TLSOptions{CAFile: ca, ServerName: "other.example"}})
		if err := r.Start(ctxT(t, 5*time.Second)); !errors.Is(err, ErrBrokerRefused) {
			t.Fatalf("Start = %v, want ErrBrokerRefused", err)
		}
	})
	t.Run("client certificate", func(t *testing.T) {
		ca, cert, key, ccert, ckey := testPKI(t, t.TempDir())
		mt := peer.StartMosquitto(t, 0, fmt.Sprintf("allow_anonymous true\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n", ca, cert, key))
		murl := fmt.Sprintf("ssl://127.0.0.1:%d", mt.Port)
		r := newTestRemote(t, RemoteOptions{Broker: murl, ClientID: "mtls",
			TLS: TLSOptions{CAFile: ca, CertFile: ccert, KeyFile: ckey}})
		if err := r.Start(ctxT(t, 5*time.Second)); err != nil || r.State() != StateConnected {
			t.Fatalf("with client certificate: %v, state %v", err, r.State())
		}
		var logs testkit.SyncBuffer
		anon := newTestRemote(t, RemoteOptions{Broker: murl, ClientID: "no-cert", TLS: TLSOptions{CAFile: ca},
			Logger: testLogger(&logs)})
		err := anon.Start(ctxT(t, 5*time.Second))
		if err == nil && anon.State() == StateConnected {
			t.Fatal("connected without the required client certificate")
		}
		// With TLS 1.3 the broker rejects the missing certificate after the
		// client's side of the handshake: the client sees a reset, logs it
		// and keeps retrying.
		if err == nil && !strings.Contains(logs.String(), "level=WARN") {
			t.Errorf("failed connection not logged: %s", logs.String())
		}
	})
	t.Run("missing CA file", func(t *testing.T) {
		_, err := NewRemote(RemoteOptions{Broker: url, TLS: TLSOptions{CAFile: filepath.Join(dir, "nope.pem")}})
		if !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("NewRemote = %v, want ErrInvalidOptions", err)
		}
	})
}

// TestRemoteResubscribesAfterBrokerRestart restarts a broker without
// persistence, which forgets every session: the client must subscribe
// again by itself.
func TestRemoteResubscribesAfterBrokerRestart(t *testing.T) {
	checkLeaks(t)
	m := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	var (
		mu     sync.Mutex
		states []State
	)
	r := newTestRemote(t, RemoteOptions{Broker: m.URL(), OnEvent: func(e Event) {
		mu.Lock()
		states = append(states, e.State)
		mu.Unlock()
	}})
	if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	if err := r.Subscribe(ctxT(t, 5*time.Second), "re/#", 1, col); err != nil {
		t.Fatal(err)
	}
	m.Kill()
	testkit.Eventually(t, 5*time.Second, "disconnected", func() bool { return r.State() == StateDisconnected })
	m.Restart()
	testkit.Eventually(t, 10*time.Second, "reconnected", func() bool { return r.State() == StateConnected })

	pub := rawClient(t, m.URL(), "re-pub", true, nil)
	// The SUBSCRIBE is sent right after CONNACK; publish until it lands.
	testkit.Eventually(t, 5*time.Second, "delivery after resubscription", func() bool {
		waitTok(t, pub.Publish("re/x", 1, false, "back"))
		return col.count() > 0
	})
	mu.Lock()
	got := fmt.Sprint(states)
	mu.Unlock()
	if want := fmt.Sprint([]State{StateConnecting, StateConnected, StateDisconnected, StateConnected}); got != want {
		t.Errorf("events %s, want %s", got, want)
	}
	if st := r.Stats(); st.Reconnects != 1 {
		t.Errorf("reconnects %d, want 1", st.Reconnects)
	}
}

// TestRemoteOverlappingSubscriptionsShareAck subscribes two filters that
// match the same message: each handler gets a delivery, and the broker is
// acknowledged only when both have acked, so one that holds back causes a
// redelivery to both after a reconnect.
func TestRemoteOverlappingSubscriptionsShareAck(t *testing.T) {
	checkLeaks(t)
	m := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	p := newProxy(t, fmt.Sprintf("127.0.0.1:%d", m.Port))
	r := newTestRemote(t, RemoteOptions{Broker: p.URL(), StatusTopic: "-"})
	ctx := ctxT(t, 10*time.Second)
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wide, narrow := newCollector(), newCollector()
	narrow.noAck = func(d *Delivery) bool { return !d.Duplicate } // finishes only on the redelivery
	if err := r.Subscribe(ctx, "ov/#", 1, wide); err != nil {
		t.Fatal(err)
	}
	if err := r.Subscribe(ctx, "ov/+", 1, narrow); err != nil {
		t.Fatal(err)
	}
	pub := rawClient(t, m.URL(), "ov-pub", true, nil)
	waitTok(t, pub.Publish("ov/x", 1, false, "m"))
	testkit.Eventually(t, 5*time.Second, "both deliveries", func() bool { return wide.count() == 1 && narrow.count() == 1 })
	if wide.deliveries()[0].Filter != "ov/#" || narrow.deliveries()[0].Filter != "ov/+" {
		t.Fatalf("filters %q %q", wide.deliveries()[0].Filter, narrow.deliveries()[0].Filter)
	}
	p.Cut()
	testkit.Eventually(t, 10*time.Second, "redelivery to both", func() bool { return wide.count() == 2 && narrow.count() == 2 })
	for _, c := range []*collector{wide, narrow} {
		if !c.deliveries()[1].Duplicate {
			t.Error("redelivery without DUP")
		}
	}
	// Now fully acknowledged: another cut brings nothing back.
	if err := r.Subscribe(ctx, "ov-sync", 1, newCollector()); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	testkit.Eventually(t, 10*time.Second, "reconnect", func() bool { return r.Stats().Reconnects >= 2 && r.State() == StateConnected })
	waitTok(t, pub.Publish("ov/marker", 1, false, "end"))
	testkit.Eventually(t, 5*time.Second, "marker", func() bool { return wide.count() >= 3 && narrow.count() >= 3 })
	want := "m,m,end"
	if w, n := strings.Join(wide.payloads(), ","), strings.Join(narrow.payloads(), ","); w != want || n != want {
		t.Fatalf("after full ack: wide %s narrow %s, want %s each", w, n, want)
	}
}

// TestRemotePublishOrWithdraw stops the broker: a PublishOrWithdraw whose
// context ends while the message waits in the offline buffer takes it back
// (ErrWithdrawn) and it is never published, while a plain Publish that
// times out the same way stays queued (ErrPending) and is delivered once
// the broker is back.
func TestRemotePublishOrWithdraw(t *testing.T) {
	checkLeaks(t)
	m := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	r := newTestRemote(t, RemoteOptions{Broker: m.URL(), StatusTopic: "-"})
	if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The client's own subscription sees what reaches the broker; it is
	// made again on the reconnect, before the buffered messages are sent.
	col := newCollector()
	if err := r.Subscribe(ctxT(t, 5*time.Second), "wd/x", 1, col); err != nil {
		t.Fatal(err)
	}
	if err := r.PublishOrWithdraw(ctxT(t, 5*time.Second), Message{Topic: "wd/up", Payload: []byte("up"), QoS: 1}); err != nil {
		t.Fatalf("with the broker up: %v", err)
	}
	m.Kill()
	testkit.Eventually(t, 5*time.Second, "disconnected", func() bool { return r.State() == StateDisconnected })

	err := r.PublishOrWithdraw(ctxT(t, 100*time.Millisecond), Message{Topic: "wd/x", Payload: []byte("withdrawn"), QoS: 1})
	if !errors.Is(err, ErrWithdrawn) || errors.Is(err, ErrPending) {
		t.Fatalf("PublishOrWithdraw during the outage: %v, want ErrWithdrawn", err)
	}
	err = r.Publish(ctxT(t, 100*time.Millisecond), Message{Topic: "wd/x", Payload: []byte("kept"), QoS: 1})
	if !errors.Is(err, ErrPending) {
		t.Fatalf("Publish during the outage: %v, want ErrPending", err)
	}
	if st := r.Stats(); st.Withdrawn != 1 || st.BufferDepth != 1 {
		t.Fatalf("withdrawn %d, buffer depth %d; want 1 and 1", st.Withdrawn, st.BufferDepth)
	}

	m.Restart()
	testkit.Eventually(t, 10*time.Second, "reconnected", func() bool { return r.State() == StateConnected })
	if err := r.PublishOrWithdraw(ctxT(t, 5*time.Second), Message{Topic: "wd/x", Payload: []byte("marker"), QoS: 1}); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	testkit.Eventually(t, 5*time.Second, "marker", func() bool { return col.count() >= 2 })
	if got := strings.Join(col.payloads(), ","); got != "kept,marker" {
		t.Fatalf("delivered %s, want kept,marker (the withdrawn message must never be published)", got)
	}
}
