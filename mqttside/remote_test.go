package mqttside

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func newTestRemote(t *testing.T, o RemoteOptions) *Remote {
	t.Helper()
	if o.ClientID == "" {
		o.ClientID = "bridge-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = 50 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 200 * time.Millisecond
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 2 * time.Second
	}
	r, err := NewRemote(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(ctxT(t, 5*time.Second)) })
	return r
}

func TestRemotePubSubEachQoS(t *testing.T) {
	checkLeaks(t)
	m := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	for _, qos := range []byte{0, 1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			r := newTestRemote(t, RemoteOptions{Broker: m.URL()})
			if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if r.State() != StateConnected {
				t.Fatalf("state %v after Start", r.State())
			}
			col := newCollector()
			filter := fmt.Sprintf("qos%d/+/value", qos)
			if err := r.Subscribe(ctxT(t, 5*time.Second), filter, qos, col); err != nil {
				t.Fatal(err)
			}
			const n = 50
			var want []string
			for i := range n {
				p := fmt.Sprintf("m%03d", i)
				want = append(want, p)
				msg := Message{Topic: fmt.Sprintf("qos%d/dev/value", qos), Payload: []byte(p), QoS: qos}
				if err := r.Publish(ctxT(t, 5*time.Second), msg); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
			}
			testkit.Eventually(t, 5*time.Second, "all messages", func() bool { return col.count() >= n })
			if got := col.payloads(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("received %v\nwant %v", got, want)
			}
			for _, d := range col.deliveries() {
				if d.QoS != qos || d.Filter != filter {
					t.Fatalf("delivery qos %d filter %q, want %d %q", d.QoS, d.Filter, qos, filter)
				}
			}
			st := r.Stats()
			if st.Published < n || st.Received != n || st.Failed != 0 || !st.Connected {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestRemoteRejectsBadInput(t *testing.T) {
	checkLeaks(t)
	r := newTestRemote(t, RemoteOptions{Broker: "tcp://127.0.0.1:1", MaxPayload: 16})
	ctx := ctxT(t, time.Second)
	tests := []struct {
		m    Message
		want error
	}{
		{Message{Topic: "a/+", QoS: 1}, ErrInvalidTopic},
		{Message{Topic: "a/#"}, ErrInvalidTopic},
		{Message{Topic: "a//b"}, ErrInvalidTopic},
		{Message{Topic: "a/\xff"}, ErrInvalidTopic},
		{Message{Topic: strings.Repeat("x", 70000)}, ErrInvalidTopic},
		{Message{Topic: "a", QoS: 3}, ErrInvalidQoS},
		{Message{Topic: "a", Payload: make([]byte, 17)}, ErrPayloadTooLarge},
	}
	for _, tt := range tests {
		if err := r.Publish(ctx, tt.m); !errors.Is(err, tt.want) {
			t.Errorf("Publish(%s) = %v, want %v", shorten(tt.m.Topic), err, tt.want)
		}
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Publish(done, Message{Topic: "a", QoS: 1}); !errors.Is(err, context.Canceled) || errors.Is(err, ErrPending) {
		t.Errorf("Publish with a finished context = %v, want context.Canceled and not accepted", err)
	}
	if d := r.Stats().BufferDepth; d != 0 {
		t.Errorf("message with a finished context was buffered (depth %d)", d)
	}
	if got := r.Stats().Invalid; got != uint64(len(tests)) {
		t.Errorf("Invalid counter %d, want %d", got, len(tests))
	}
	if err := r.Subscribe(ctx, "a/#/b", 1, newCollector()); !errors.Is(err, ErrInvalidFilter) {
		t.Errorf("Subscribe(bad filter) = %v", err)
	}
	if err := r.Subscribe(ctx, "a", 3, newCollector()); !errors.Is(err, ErrInvalidQoS) {
		t.Errorf("Subscribe(qos 3) = %v", err)
	}
	for _, b := range []string{"", "http://x", "tcp://", "ftp://h:1", "::nonsense"} {
		if _, err := NewRemote(RemoteOptions{Broker: b}); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("NewRemote(broker %q) = %v, want ErrInvalidOptions", b, err)
		}
	}
	if _, err := NewRemote(RemoteOptions{Broker: "tcp://h", TLS: TLSOptions{CertFile: "x"}}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("cert without key accepted: %v", err)
	}
}

func TestRemoteBadCredentials(t *testing.T) {
	checkLeaks(t)
	m := peer.StartMosquitto(t, 0, "allow_anonymous false\n")
	var logs testkit.SyncBuffer
	r := newTestRemote(t, RemoteOptions{Broker: m.URL(), Username: "bridge", Password: "wrong-password",
		Logger: testLogger(&logs)})
	start := time.Now()
	err := r.Start(ctxT(t, 10*time.Second))
	if !errors.Is(err, ErrBrokerRefused) {
		t.Fatalf("Start = %v, want ErrBrokerRefused", err)
	}
	if !strings.Contains(err.Error(), m.URL()) {
		t.Errorf("error %q does not name the broker %s", err, m.URL())
	}
	if strings.Contains(err.Error()+logs.String(), "wrong-password") {
		t.Error("password leaked into error or logs")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("refusal took %v: looks like a retry loop", d)
	}
	if r.State() != StateClosed {
		t.Errorf("state %v after refusal, want closed", r.State())
	}
	if err := r.Publish(ctxT(t, time.Second), Message{Topic: "a", QoS: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after refused Start = %v, want ErrClosed", err)
	}
}

func TestRemoteUnreachableAtStartThenBuffers(t *testing.T) {
	checkLeaks(t)
	port := peer.FreeTCPPort(t)
	var logs testkit.SyncBuffer
	var (
		events    sync.Map
		failEvent sync.Once
		failErr   = make(chan error, 1)
	)
	r := newTestRemote(t, RemoteOptions{
		Broker:     fmt.Sprintf("tcp://127.0.0.1:%d", port),
		BufferSize: 3,
		Logger:     testLogger(&logs),
		OnEvent: func(e Event) {
			events.Store(e.State, true)
			if e.Err != nil {
				failEvent.Do(func() { failErr <- e.Err })
			}
		},
	})
	if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("Start with unreachable broker = %v, want nil (retry in background)", err)
	}
	if r.State() == StateConnected {
		t.Fatal("connected to nothing")
	}
	col := newCollector()
	if err := r.Subscribe(ctxT(t, time.Second), "buf/#", 1, col); err != nil {
		t.Fatalf("Subscribe while offline = %v, want nil (made on connect)", err)
	}
	if !strings.Contains(logs.String(), "unreachable") || !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("logs do not say why: %s", logs.String())
	}
	select {
	case err := <-failErr:
		if !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("event error %v", err)
		}
	default:
		t.Error("no event carrying the connection error")
	}

	// Fill the offline buffer with QoS 1: accepted, pending.
	results := make(chan error, 3)
	for i := range 3 {
		go func() {
			results <- r.Publish(context.Background(), Message{Topic: "buf/t", Payload: []byte{byte('0' + i)}, QoS: 1})
		}()
		testkit.Eventually(t, time.Second, "message buffered", func() bool { return r.Stats().BufferDepth == i+1 })
	}
	// Full of QoS 1: a QoS 1 publish is refused, a QoS 0 one dropped.
	if err := r.Publish(ctxT(t, time.Second), Message{Topic: "buf/t", QoS: 1}); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("publish into full buffer = %v, want ErrBufferFull", err)
	}
	if err := r.Publish(ctxT(t, time.Second), Message{Topic: "buf/t", QoS: 0}); !errors.Is(err, ErrDropped) {
		t.Fatalf("QoS 0 publish into buffer full of QoS 1 = %v, want ErrDropped", err)
	}
	st := r.Stats()
	if st.Refused != 1 || st.DroppedQoS0 != 1 || st.Buffered != 3 || st.BufferDepth != 3 || st.Connected {
		t.Fatalf("stats %+v", st)
	}

	// The broker comes up on that port: the client connects by itself,
	// makes the subscription registered while offline, and delivers the
	// buffer in order.
	peer.StartMosquitto(t, port, "allow_anonymous true\n")
	testkit.Eventually(t, 10*time.Second, "connected", func() bool { return r.State() == StateConnected })
	for range 3 {
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("buffered publish: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("buffered publish not settled after reconnect")
		}
	}
	testkit.Eventually(t, 5*time.Second, "buffered messages delivered", func() bool { return col.count() >= 3 })
	if got := strings.Join(col.payloads(), ""); got != "012" {
		t.Errorf("received %q, want \"012\" in order", got)
	}
	_, sawConnecting := events.Load(StateConnecting)
	_, sawConnected := events.Load(StateConnected)
	if !sawConnecting || !sawConnected {
		t.Error("missing connecting/connected events")
	}
	if st := r.Stats(); st.Published != 3 || st.BufferDepth != 0 {
		t.Errorf("stats after flush %+v", st)
	}
}

func TestRemoteGoodCredentials(t *testing.T) {
	checkLeaks(t)
	pwfile := filepath.Join(t.TempDir(), "passwd")
	if out, err := runPeer(t, 10*time.Second, "mosquitto_passwd", "-c", "-b", pwfile, "bridge", "s3cret"); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	if err := os.Chmod(pwfile, 0o600); err != nil {
		t.Fatal(err)
	}
	m := peer.StartMosquitto(t, 0, "allow_anonymous false\npassword_file "+pwfile+"\n")
	r := newTestRemote(t, RemoteOptions{Broker: m.URL(), Username: "bridge", Password: "s3cret"})
	if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := r.Publish(ctxT(t, 5*time.Second), Message{Topic: "auth/ok", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	bad := newTestRemote(t, RemoteOptions{Broker: m.URL(), ClientID: "bad", Username: "bridge", Password: "nope"})
	if err := bad.Start(ctxT(t, 5*time.Second)); !errors.Is(err, ErrBrokerRefused) {
		t.Fatalf("wrong password: %v", err)
	}
}
