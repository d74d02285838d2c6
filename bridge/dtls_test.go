package bridge

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/coap-mqtt/bridge/rules"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const secureRules = `
[[ingress]]
name     = "secure"
path     = "/secure/{device}"
methods  = ["POST"]
topic    = "secure/{device}"
identity = "{device}"

[[ingress]]
name    = "who"
path    = "/who/{x}"
methods = ["POST"]
topic   = "who/{identity}/{x}"
`

func pskClient(t *testing.T, identity, key string) *coapside.Client {
	t.Helper()
	conn, err := dtls.NewClientConn("127.0.0.1:0", dtls.ClientConfig{
		Credentials: dtls.Credentials{PSKIdentity: identity, PSK: keys.Secret(key)},
		Limits:      dtls.Limits{HandshakeTimeout: 3 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := coapside.NewClient(coapside.ClientOptions{Conn: conn, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestDTLSIdentityInRules: a device authenticated by PSK may publish as
// itself only; plain UDP on a rule that requires identity gets 4.01; the
// identity is available to topic templates.
func TestDTLSIdentityInRules(t *testing.T) {
	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk.toml")
	os.WriteFile(pskFile, []byte(`
[[psk]]
identity = "dev1"
key      = "secret-1"

[[psk]]
identity = "dev2"
key      = "hex:00112233445566778899aabbccddeeff"
`), 0o600)
	tb := startBridge(t, secureRules, func(c *Config, _ *Options) {
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
	})
	sub := subscribe(t, tb.MQTTAddr(), "#", 0)
	secureURL := func(path string) string { return "coaps://" + tb.DTLSAddr().String() + path }
	dev1 := pskClient(t, "dev1", "secret-1")
	ctx := t.Context()

	resp, err := dev1.Post(ctx, secureURL("/secure/dev1"), message.TextPlain, []byte("ok"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("dev1 as itself: %v %v", resp, err)
	}
	if m := sub.next(t, 5*time.Second); m.Topic() != "secure/dev1" {
		t.Fatalf("topic %s", m.Topic())
	}
	resp, err = dev1.Post(ctx, secureURL("/secure/dev2"), message.TextPlain, []byte("spoof"))
	if err != nil || resp.Code != message.Forbidden {
		t.Fatalf("dev1 posing as dev2: %v %v, want 4.03", resp, err)
	}
	resp, err = dev1.Post(ctx, secureURL("/who/x1"), message.TextPlain, []byte("1"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("who: %v %v", resp, err)
	}
	if m := sub.next(t, 5*time.Second); m.Topic() != "who/dev1/x1" {
		t.Fatalf("identity in topic: %s", m.Topic())
	}

	plain := newCoAPClient(t)
	resp, err = plain.Post(ctx, tb.coapURL("/secure/dev1"), message.TextPlain, []byte("plain"))
	if err != nil || resp.Code != message.Unauthorized {
		t.Fatalf("plain UDP on an identity rule: %v %v, want 4.01", resp, err)
	}
	// {identity} in a topic has no value without DTLS: 4.01, an identity
	// error, not a 4.00 escape.
	resp, err = plain.Post(ctx, tb.coapURL("/who/x2"), message.TextPlain, []byte("plain"))
	if err != nil || resp.Code != message.Unauthorized {
		t.Fatalf("plain UDP on a rule with {identity} in its topic: %v %v, want 4.01", resp, err)
	}
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("who", reasonEscape)); got != 0 {
		t.Errorf("who counted %v escapes, want identity errors", got)
	}
	sub.none(t, 200*time.Millisecond)
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("secure", reasonIdentity)); got != 2 {
		t.Errorf("identity errors %v, want 2", got)
	}

	// A wrong key never gets a session.
	bad := pskClient(t, "dev1", "wrong")
	if _, err := bad.Post(ctx, secureURL("/secure/dev1"), message.TextPlain, []byte("x")); err == nil {
		t.Fatal("a wrong key was accepted")
	}
}

// TestCoapsDeviceCommand reaches a device over DTLS with its PSK
// from the device registry.
func TestCoapsDeviceCommand(t *testing.T) {
	psk := dtls.NewPSKStore(map[string]dtls.Secret{"bridge": keys.Secret("device-key")})
	conn, err := dtls.Listen("udp", "127.0.0.1:0", dtls.ServerConfig{PSK: psk})
	if err != nil {
		t.Fatal(err)
	}
	dev := &fakeDevice{addr: conn.LocalAddr(), mux: coapside.NewServeMux(), got: make(chan recorded, 10)}
	dev.mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) {
		id, _ := r.PeerIdentity()
		dev.got <- recorded{method: r.Method, path: r.Path(), payload: string(r.Payload) + " from " + id}
		w.SetCode(message.Changed)
	})
	obs := runObserveServer(t)
	var temp atomic.Int64
	dev.mux.Handle("GET /temp", obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte(strconv.FormatInt(temp.Load(), 10)))
	})))
	srv := &coapside.Server{Handler: dev.mux}
	go srv.Serve(conn)
	t.Cleanup(func() { srv.Close() })

	rules := fmt.Sprintf(`
[[device]]
name         = "secure-1"
url          = "coaps://%s"
psk_identity = "bridge"
psk          = "device-key"

[[command]]
name           = "led"
filter         = "cmd/{device}/led"
method         = "PUT"
url            = "coaps://{device}/led"
response_topic = "replies/{device}"
timeout        = "5s"

[[observe]]
name    = "temp"
devices = ["secure-1"]
paths   = ["/temp"]
topic   = "temp/{device}"
`, conn.LocalAddr())
	tb := startBridge(t, rules, nil)
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 0)
	publish(t, tb.MQTTAddr(), "cmd/secure-1/led", 0, false, "on")
	select {
	case rec := <-dev.got:
		if rec.payload != "on from bridge" {
			t.Fatalf("device got %q", rec.payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("command did not reach the coaps device")
	}
	if r := decodeResult(t, replies.next(t, 5*time.Second).Payload()); r.Status != "ok" || r.Code != "2.04" {
		t.Fatalf("result %+v", r)
	}
	// The observation runs over the same DTLS session.
	temps := subscribe(t, tb.MQTTAddr(), "temp/#", 0)
	testkit.Eventually(t, 10*time.Second, "observer over DTLS", func() bool { return obs.Observers("/temp") == 1 })
	temp.Store(31)
	obs.Notify("/temp")
	temps.waitFor(t, 5*time.Second, "temp/secure-1", "31")
}

// TestCoapsDeviceWrongKey: a device whose key does not match sees a failed
// handshake (a key mismatch, never a completed one); the bridge counts each
// failed poll and keeps trying. The device would answer on /temp, so with
// the right key a value would be published.
func TestCoapsDeviceWrongKey(t *testing.T) {
	psk := dtls.NewPSKStore(map[string]dtls.Secret{"bridge": keys.Secret("device-key")})
	conn, err := dtls.Listen("udp", "127.0.0.1:0", dtls.ServerConfig{PSK: psk, Limits: dtls.Limits{HandshakeTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	mux := coapside.NewServeMux()
	mux.HandleFunc("GET /temp", func(w coapside.ResponseWriter, r *coapside.Request) { w.Write([]byte("21")) })
	srv := &coapside.Server{Handler: mux}
	go srv.Serve(conn)
	t.Cleanup(func() { srv.Close() })
	rules := fmt.Sprintf(`
[[device]]
name         = "secure-1"
url          = "coaps://%s"
psk_identity = "bridge"
psk          = "not-the-key"

[[poll]]
name     = "temp"
devices  = ["secure-1"]
paths    = ["/temp"]
interval = "200ms"
topic    = "temp/{device}"
`, conn.LocalAddr())
	tb := startBridge(t, rules, func(_ *Config, o *Options) {
		o.RequestTimeout = 2 * time.Second // bounds each handshake attempt
	})
	temps := subscribe(t, tb.MQTTAddr(), "temp/#", 0)
	// The device saw the key mismatch, and completed no handshake.
	testkit.Eventually(t, 10*time.Second, "a key mismatch at the device", func() bool {
		return conn.Stats().Failed(dtls.FailBadPSK) >= 1
	})
	// The bridge keeps polling, and counts every failed poll.
	testkit.Eventually(t, 10*time.Second, "failed polls counted", func() bool {
		return testutil.ToFloat64(tb.metrics.errors.WithLabelValues("temp", reasonTimeout))+
			testutil.ToFloat64(tb.metrics.errors.WithLabelValues("temp", reasonCoAP)) >= 2
	})
	if n := conn.Stats().HandshakesOK; n != 0 {
		t.Fatalf("%d handshakes completed with the wrong key", n)
	}
	temps.none(t, 200*time.Millisecond)
}

// TestReloadKeepsTheKeysOfAnEmptiedPSKFile: a psk_file truncated in place
// (as an editor saving it does) does not remove every key.
func TestReloadKeepsTheKeysOfAnEmptiedPSKFile(t *testing.T) {
	pskFile := filepath.Join(t.TempDir(), "psk.toml")
	if err := os.WriteFile(pskFile, []byte("[[psk]]\nidentity = \"dev1\"\nkey = \"secret-1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, secureRules, func(c *Config, o *Options) {
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
		o.ReloadSettle = 50 * time.Millisecond
	})
	if err := os.WriteFile(pskFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "reload after the psk_file changed", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadOK))+testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadRefused)) >= 1
	})
	dev1 := pskClient(t, "dev1", "secret-1")
	resp, err := dev1.Post(t.Context(), "coaps://"+tb.DTLSAddr().String()+"/secure/dev1", message.TextPlain, []byte("ok"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("dev1 after its psk_file was emptied: %v %v", resp, err)
	}
}

// TestDTLSIdentityInResourceTopic: a resource rule whose topic uses
// {identity} reads the topic of the authenticated client, as an ingress
// rule publishes to it.
func TestDTLSIdentityInResourceTopic(t *testing.T) {
	pskFile := filepath.Join(t.TempDir(), "psk.toml")
	if err := os.WriteFile(pskFile, []byte("[[psk]]\nidentity = \"dev1\"\nkey = \"secret-1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, `
[[resource]]
name  = "mine"
path  = "/mine/{x}"
topic = "mine/{identity}/{x}"
`, func(c *Config, _ *Options) {
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
	})
	publish(t, tb.MQTTAddr(), "mine/dev1/cfg", 1, false, "v1")
	dev1 := pskClient(t, "dev1", "secret-1")
	url := "coaps://" + tb.DTLSAddr().String() + "/mine/cfg"
	var last string
	testkit.Eventually(t, 10*time.Second, "dev1 reads mine/dev1/cfg", func() bool {
		resp, err := dev1.Get(t.Context(), url)
		if err != nil {
			last = err.Error()
			return false
		}
		last = resp.Code.String()
		return resp.Code == message.Content && string(resp.Payload) == "v1"
	})
	if got := testutil.ToFloat64(tb.metrics.errors.WithLabelValues("mine", reasonEscape)); got != 0 {
		t.Errorf("escape errors %v (last answer %s), want 0", got, last)
	}
}

// TestCoapsDeviceSessionFollowsItsCredentials: the DTLS session with a
// coaps device is the one its entry's credentials made. Two entries at one
// address with different keys each get their own handshake (the wrong one
// fails, however recently the right one's session was made), and a reload
// that changes the device's key ends the old session: the next command
// fails the handshake instead of riding the session of the old key.
func TestCoapsDeviceSessionFollowsItsCredentials(t *testing.T) {
	psk := dtls.NewPSKStore(map[string]dtls.Secret{"bridge": keys.Secret("device-key")})
	conn, err := dtls.Listen("udp", "127.0.0.1:0", dtls.ServerConfig{PSK: psk, Limits: dtls.Limits{HandshakeTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	mux := coapside.NewServeMux()
	mux.HandleFunc("PUT /led", func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) })
	srv := &coapside.Server{Handler: mux}
	go srv.Serve(conn)
	t.Cleanup(func() { srv.Close() })
	entries := func(keyOfRight string) string {
		return fmt.Sprintf(`
[[device]]
name         = "right"
url          = "coaps://%[1]s"
psk_identity = "bridge"
psk          = %[2]q

[[device]]
name         = "wrong"
url          = "coaps://%[1]s"
psk_identity = "bridge"
psk          = "not-the-key"

[[command]]
name           = "led"
filter         = "cmd/{device}/led"
method         = "PUT"
url            = "coaps://{device}/led"
response_topic = "replies/{device}"
timeout        = "3s"
`, conn.LocalAddr(), keyOfRight)
	}
	tb := startBridge(t, entries("device-key"), func(_ *Config, o *Options) { o.ReloadSettle = 50 * time.Millisecond })
	replies := subscribe(t, tb.MQTTAddr(), "replies/#", 1)
	command := func(device, want string) {
		t.Helper()
		publish(t, tb.MQTTAddr(), "cmd/"+device+"/led", 1, false, "on")
		m := replies.next(t, 15*time.Second)
		if r := decodeResult(t, m.Payload()); m.Topic() != "replies/"+device || (r.Status == "ok") != (want == "ok") {
			t.Fatalf("%s: result %+v on %s, want %s", device, r, m.Topic(), want)
		}
	}
	command("right", "ok")
	command("wrong", "a failure")
	// The failing entry does not lend its credentials to the handshakes
	// writes make at that address (an observation's, say).
	tb.Bridge.devices.mu.Lock()
	bound := tb.Bridge.devices.peers[conn.LocalAddr().String()]
	tb.Bridge.devices.mu.Unlock()
	if bound != "right" {
		t.Errorf("the address is bound to %q after the wrong entry failed, want right", bound)
	}
	command("right", "ok")
	if n := conn.Stats().HandshakesOK; n != 2 {
		t.Errorf("%d handshakes completed, want 2 (right, wrong refused, right again)", n)
	}

	tb.writeRules(t, entries("rotated-key"))
	testkit.Eventually(t, 5*time.Second, "reload", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadOK)) >= 1
	})
	command("right", "a failure")
	if n := conn.Stats().Failed(dtls.FailBadPSK); n < 2 {
		t.Errorf("%d key mismatches at the device, want the wrong entry's and the rotated key's", n)
	}
}

// TestPSKFileReloadEndsRevokedSessions: removing an identity from the
// psk_file, or changing its key, ends its live session at the reload (the
// device must handshake again, and cannot); other devices keep theirs. A
// psk_file that does not parse keeps the keys and counts the reload as an
// error.
func TestPSKFileReloadEndsRevokedSessions(t *testing.T) {
	pskFile := filepath.Join(t.TempDir(), "psk.toml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(pskFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("[[psk]]\nidentity = \"dev1\"\nkey = \"secret-1\"\n\n[[psk]]\nidentity = \"dev2\"\nkey = \"secret-2\"\n")
	tb := startBridge(t, secureRules, func(c *Config, o *Options) {
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
		o.ReloadSettle = 50 * time.Millisecond
	})
	url := func(dev string) string { return "coaps://" + tb.DTLSAddr().String() + "/secure/" + dev }
	dev1, dev2 := pskClient(t, "dev1", "secret-1"), pskClient(t, "dev2", "secret-2")
	for dev, c := range map[string]*coapside.Client{"dev1": dev1, "dev2": dev2} {
		if resp, err := c.Post(t.Context(), url(dev), message.TextPlain, []byte("1")); err != nil || resp.Code != message.Changed {
			t.Fatalf("%s: %v %v", dev, resp, err)
		}
	}
	if n := tb.dtlsStats().SessionsActive; n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}

	write("[[psk]]\nidentity = \"dev2\"\nkey = \"secret-2\"\n") // dev1 revoked
	testkit.Eventually(t, 5*time.Second, "dev1's session ended", func() bool { return tb.dtlsStats().SessionsActive == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if resp, err := dev1.Post(ctx, url("dev1"), message.TextPlain, []byte("2")); err == nil {
		t.Fatalf("revoked dev1 was answered %v", resp.Code)
	}
	if resp, err := dev2.Post(t.Context(), url("dev2"), message.TextPlain, []byte("2")); err != nil || resp.Code != message.Changed {
		t.Fatalf("dev2 after dev1's revocation: %v %v", resp, err)
	}

	write("[[psk]]\nidentity = \"dev2\"\nkey = \"hex:abc\"\n") // does not parse
	testkit.Eventually(t, 5*time.Second, "the bad psk_file counted", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadError)) >= 1
	})
	if resp, err := dev2.Post(t.Context(), url("dev2"), message.TextPlain, []byte("3")); err != nil || resp.Code != message.Changed {
		t.Fatalf("dev2 after a bad psk_file: %v %v", resp, err)
	}
}

// dtlsStats reads the coaps listener's counters.
func (tb *testBridge) dtlsStats() dtls.Stats {
	tb.Bridge.mu.Lock()
	conn := tb.Bridge.dtlsConn
	tb.Bridge.mu.Unlock()
	return conn.Stats()
}

// TestCredentialsKeyFollowsFileContent: a device's credentials name
// changes when a file it names is replaced in place, not only when the
// entry names another file.
func TestCredentialsKeyFollowsFileContent(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	dev := &rules.Device{Name: "d", Secure: true, CAFile: ca}
	k1 := credentialsKey(dev)
	if credentialsKey(dev) != k1 {
		t.Fatal("the key of unchanged credentials changed")
	}
	if err := os.WriteFile(ca, []byte("second, longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	if credentialsKey(dev) == k1 {
		t.Fatal("a CA file replaced in place keeps the key")
	}
	other := *dev
	other.PSKIdentity = "x"
	if credentialsKey(&other) == credentialsKey(dev) {
		t.Fatal("another identity keeps the key")
	}
}
