package bridge

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// learnedDTLSRules: devices push over coaps as themselves, are commanded
// on their session and observed where they last spoke from.
const learnedDTLSRules = `
[[ingress]]
name     = "secure"
path     = "/secure/{device}"
methods  = ["POST"]
topic    = "secure/{device}"
identity = "{device}"

[[command]]
name           = "secure-down"
filter         = "scmd/{device}/{resource...}"
method         = "PUT"
url            = "coaps://{device}/{resource...}"
response_topic = "sreplies/{device}/{resource...}"
timeout        = "5s"

[[observe]]
name    = "every"
devices = ["*"]
paths   = ["/temp"]
topic   = "temp/{device}"
`

// gaugeValue reads a gauge without labels from reg; -1 when absent.
func gaugeValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// TestLearnedCoapsDeviceResumesThroughNAT: a coaps device behind a NAT
// pushes as itself, is commanded and observed on its DTLS session; the NAT
// rebinds it, its records on the old session are dropped until it presumes
// the session dead and handshakes again, resuming it (abbreviated
// handshake); its push then passes the identity rule again, the bridge
// moves it, with its identity, to the new binding and session, ends the
// session at the old binding, and commands and the observation follow.
func TestLearnedCoapsDeviceResumesThroughNAT(t *testing.T) {
	pskFile := filepath.Join(t.TempDir(), "psk.toml")
	if err := os.WriteFile(pskFile, []byte("[[psk]]\nidentity = \"dev1\"\nkey = \"secret-1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, learnedDTLSRules, func(c *Config, _ *Options) {
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
	})
	nat := peer.StartNAT(t, tb.DTLSAddr().(*net.UDPAddr), 0)

	// The device: a DTLS client that serves on the socket it pushes from.
	conn, err := dtls.NewClientConn("127.0.0.1:0", dtls.ClientConfig{
		Credentials: dtls.Credentials{PSKIdentity: "dev1", PSK: keys.Secret("secret-1")},
		DeadAfter:   500 * time.Millisecond,
		Limits:      dtls.Limits{HandshakeTimeout: 3 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	self := conn.LocalAddr().(*net.UDPAddr)
	got := make(chan recorded, 10)
	mux := coapside.NewServeMux()
	mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) {
		got <- recorded{method: r.Method, path: r.Path(), payload: string(r.Payload), from: r.Peer}
		w.SetCode(message.Changed)
	})
	obs := runObserveServer(t)
	var temp atomic.Int64
	mux.Handle("GET /temp", obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte(strconv.FormatInt(temp.Load(), 10)))
	})))
	srv := &coapside.Server{Handler: mux}
	go srv.Serve(conn)
	t.Cleanup(func() { srv.Close(); conn.Close() })
	testkit.Eventually(t, 5*time.Second, "device serving", func() bool { return len(srv.Endpoints()) == 1 })
	push, err := coapside.NewClient(coapside.ClientOptions{Endpoint: srv.Endpoints()[0], Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pushUp := func(value string) {
		t.Helper()
		resp, err := push.Post(t.Context(), "coaps://"+nat.Addr().String()+"/secure/dev1", message.TextPlain, []byte(value))
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("push %q through the NAT: %v %v", value, resp, err)
		}
	}
	command := func(payload string) recorded {
		t.Helper()
		publish(t, tb.MQTTAddr(), "scmd/dev1/led", 1, false, payload)
		select {
		case r := <-got:
			return r
		case <-time.After(10 * time.Second):
			t.Fatalf("command %q did not reach the device", payload)
			return recorded{}
		}
	}
	ups := subscribe(t, tb.MQTTAddr(), "secure/#", 1)
	temps := subscribe(t, tb.MQTTAddr(), "temp/#", 1)
	replies := subscribe(t, tb.MQTTAddr(), "sreplies/#", 1)

	temp.Store(20)
	pushUp("first")
	ups.waitFor(t, 5*time.Second, "secure/dev1", "first")
	before := nat.External(self)
	if ld, ok := tb.learned.lookup("dev1"); !ok || ld.Addr.String() != before.String() || ld.Via != ViaDTLS || !ld.Authenticated {
		t.Fatalf("learned %+v %v, want dev1 at the binding %v over dtls, authenticated", ld, ok, before)
	}
	temps.waitFor(t, 10*time.Second, "temp/dev1", "20")
	if r := command("on"); r.payload != "on" || r.path != "/led" {
		t.Fatalf("device got %+v", r)
	}
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" || r.Code != "2.04" {
		t.Fatalf("result %+v", r)
	}
	if n := counterValue(t, tb.reg, "bridge_dtls_handshakes_resumed_total"); n != 0 {
		t.Fatalf("resumed handshakes before the rebinding: %v", n)
	}

	after, err := nat.Rebind(self)
	if err != nil {
		t.Fatal(err)
	}
	temp.Store(21)
	// The push first goes out on the old session, from the new binding:
	// the bridge has no session there and drops it. The device's
	// retransmission finds its session silent past DeadAfter and
	// handshakes again, resuming the session.
	pushUp("second")
	ups.waitFor(t, 5*time.Second, "secure/dev1", "second")
	if n := counterValue(t, tb.reg, "bridge_dtls_handshakes_resumed_total"); n != 1 {
		t.Errorf("resumed handshakes %v, want 1", n)
	}
	if n := counterValue(t, tb.reg, "bridge_dtls_handshakes_ok_total"); n != 2 {
		t.Errorf("handshakes %v, want 2 (one full, one resumed)", n)
	}
	if s := conn.Stats(); s.HandshakesResumed != 1 || s.SessionsDead != 1 {
		t.Errorf("device: resumed %d, presumed dead %d; want 1, 1", s.HandshakesResumed, s.SessionsDead)
	}
	ld, _ := tb.learned.lookup("dev1")
	if ld.Addr.String() != after.String() || ld.Via != ViaDTLS || !ld.Authenticated {
		t.Fatalf("after the rebinding learned %+v, want dev1 at %v over dtls, authenticated", ld, after)
	}
	// The session at the dead binding is ended.
	testkit.Eventually(t, 5*time.Second, "old session ended", func() bool {
		return counterValue(t, tb.reg, "bridge_dtls_sessions_moved_total") == 1 &&
			gaugeValue(t, tb.reg, "bridge_dtls_sessions_active") == 1
	})

	if r := command("off"); r.payload != "off" {
		t.Fatalf("after the rebinding the device got %+v", r)
	}
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" || r.Code != "2.04" {
		t.Fatalf("result after the rebinding %+v", r)
	}
	// The observation is made again at the new binding, on the new session.
	temps.waitFor(t, 10*time.Second, "temp/dev1", "21")
	temp.Store(22)
	obs.Notify("/temp")
	temps.waitFor(t, 5*time.Second, "temp/dev1", "22")
}
