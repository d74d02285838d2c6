package mqttside

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

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

// tryConnect connects to broker as user and disconnects: the CONNACK's
// refusal, or nil.
func tryConnect(broker, id, user, pw string) error {
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetUsername(user).SetPassword(pw).
		SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	tok.WaitTimeout(5 * time.Second)
	if tok.Error() == nil {
		c.Disconnect(50)
	}
	return tok.Error()
}

// TestEmbeddedACL checks authentication and topic allow/deny with an auth
// file, using Paho clients over TCP.
func TestEmbeddedACL(t *testing.T) {
	checkLeaks(t)
	authFile := writeAuthFile(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"}, "")
	var logs testkit.SyncBuffer
	e := newTestEmbedded(t, EmbeddedOptions{AuthFile: authFile, Logger: testLogger(&logs)})
	url := "tcp://" + e.Addr()
	ctx := ctxT(t, 10*time.Second)

	connect := func(id, user, pw string) error { return tryConnect(url, id, user, pw) }
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
	testkit.Eventually(t, 5*time.Second, "allowed publish", func() bool { return inbox.count() >= 1 })
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

// TestEmbeddedReloadAuth: ReloadAuth applies an edited auth file without a
// restart: a user added can connect, a removed user's live connection is
// closed and it cannot connect again, a user left as it was keeps its
// connection; a file that does not load keeps the users loaded before.
func TestEmbeddedReloadAuth(t *testing.T) {
	checkLeaks(t)
	authFile := writeAuthFile(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"}, "")
	e := newTestEmbedded(t, EmbeddedOptions{AuthFile: authFile})
	url := "tcp://" + e.Addr()
	connect := func(id, user, pw string) error { return tryConnect(url, id, user, pw) }
	lost := make(chan string, 2)
	live := func(user string) paho.Client {
		return rawClient(t, url, user+"-live", true, func(o *paho.ClientOptions) {
			o.SetUsername(user).SetPassword(user + "-pw").SetAutoReconnect(false).
				SetConnectionLostHandler(func(paho.Client, error) { lost <- user })
		})
	}
	live("alice")
	live("bob")
	if err := connect("carol-1", "carol", "carol-pw"); err == nil {
		t.Fatal("carol connected before she was added")
	}

	// bob stays as he was (same hash), alice goes, carol comes.
	data, err := os.ReadFile(authFile)
	if err != nil {
		t.Fatal(err)
	}
	bob := string(data[strings.Index(string(data), "[[user]]\nname = \"bob\""):])
	if i := strings.Index(bob[1:], "[[user]]"); i >= 0 {
		bob = bob[:i+1]
	}
	carol := writeAuthFile(t, map[string]string{"carol": "carol-pw"}, "")
	carolData, err := os.ReadFile(carol)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(authFile, []byte(bob+"\n"+string(carolData)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.ReloadAuth(); err != nil {
		t.Fatal(err)
	}
	select {
	case who := <-lost:
		if who != "alice" {
			t.Fatalf("%s lost the connection, want alice", who)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alice is still connected after her removal")
	}
	if err := connect("alice-2", "alice", "alice-pw"); err == nil {
		t.Error("removed alice connected again")
	}
	if err := connect("carol-2", "carol", "carol-pw"); err != nil {
		t.Errorf("added carol: %v", err)
	}
	select {
	case who := <-lost:
		t.Fatalf("%s lost the connection too", who)
	case <-time.After(200 * time.Millisecond):
	}

	if err := os.WriteFile(authFile, []byte("[[user]]\nname = \"x\"\npassword = \"plain\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.ReloadAuth(); err == nil {
		t.Fatal("a file with a plain password was loaded")
	}
	if err := connect("carol-3", "carol", "carol-pw"); err != nil {
		t.Errorf("carol after a rejected reload: %v", err)
	}
}
