package main

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// simPush is one request received by a test ingress.
type simPush struct {
	path, payload string
	identity      string // the DTLS PSK identity, "" over plain UDP
	cf            message.MediaType
	peer          net.Addr
	ep            *coapside.Endpoint
	at            time.Time
}

// startIngress serves a stand-in for the bridge's ingress on a free port:
// every request is answered 2.04 and reported on the returned channel.
func startIngress(t *testing.T) (*net.UDPAddr, <-chan simPush) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startIngressOn(t, conn)
}

// startIngressOn is startIngress on conn (a DTLS server, say).
func startIngressOn(t *testing.T, conn net.PacketConn) (*net.UDPAddr, <-chan simPush) {
	t.Helper()
	pushes := make(chan simPush, 256)
	serveCoap(t, coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		cf, _ := r.Options.ContentFormat()
		p := simPush{path: r.Options.Path(), payload: string(r.Payload), cf: cf, peer: r.Peer, ep: r.Endpoint(), at: time.Now()}
		if sc, ok := r.Conn().(*dtls.ServerConn); ok {
			p.identity, _ = sc.PeerIdentity(r.Peer)
		}
		select {
		case pushes <- p:
		default:
			t.Errorf("ingress: push %s not taken by the test", p.path)
		}
		w.SetCode(message.Changed)
	}), conn)
	return conn.LocalAddr().(*net.UDPAddr), pushes
}

// nextPush waits for the next push.
func nextPush(t *testing.T, pushes <-chan simPush, within time.Duration) simPush {
	t.Helper()
	select {
	case p := <-pushes:
		return p
	case <-time.After(within):
		t.Fatalf("no push within %v", within)
		return simPush{}
	}
}

// commandLED sends PUT /actuators/led from the ingress's own socket (as the
// bridge does for a learned device) to where the push came from.
func commandLED(t *testing.T, p simPush, state string, timeout time.Duration) (*coapside.Response, error) {
	t.Helper()
	c, err := coapside.NewClient(coapside.ClientOptions{Endpoint: p.ep})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Put(ctx, "coap://"+p.peer.String()+simPathLED, message.TextPlain, []byte(state))
}

func TestSimPushOptionsRejected(t *testing.T) {
	const url = "coap://127.0.0.1:5683/telemetry/{device}/{metric}"
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"sleep without push", []string{"--sleep", "10s"}, "--sleep needs --push"},
		{"awake without sleep", []string{"--push", url, "--awake", "1s"}, "--awake needs --sleep"},
		{"awake not shorter than sleep", []string{"--push", url, "--sleep", "5s", "--awake", "5s"}, "shorter than --sleep"},
		{"negative awake", []string{"--push", url, "--sleep", "5s", "--awake", "-1s"}, "--awake"},
		{"negative sleep", []string{"--push", url, "--sleep", "-5s"}, "--sleep"},
		{"coaps push without key", []string{"--push", "coaps://127.0.0.1:5684/t/{device}/{metric}"}, "--push coaps:// needs --psk-key"},
		{"dtls port with push", []string{"--push", "coaps://127.0.0.1:5684/t/{device}/{metric}", "--psk-key", "k", "--dtls-base-port", "5800"}, "--dtls-base-port with --push"},
		{"http push", []string{"--push", "http://127.0.0.1/t/{device}/{metric}"}, "want a coap:// or coaps:// URL"},
		{"no device", []string{"--push", "coap://127.0.0.1/t/{metric}"}, "{device}"},
		{"no metric", []string{"--push", "coap://127.0.0.1/t/{device}"}, "{metric}"},
		{"bad host", []string{"--push", "coap://[::1/t/{device}/{metric}"}, "--push"},
		{"psk with plain push", []string{"--push", url, "--psk-key", "k"}, "--psk-key with a coap:// --push"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, append([]string{"sim", "--base-port", "0"}, tc.args...)...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, exitUsage, errOut)
			}
			if !strings.Contains(errOut, tc.msg) {
				t.Errorf("stderr %q lacks %q", errOut, tc.msg)
			}
		})
	}
}

// TestSimPushFromServingSocket: a pushing device POSTs each reading to the
// URL with its name and the metric filled in, from the socket it serves
// on, and a command sent back to that address from the ingress's socket
// is carried out.
func TestSimPushFromServingSocket(t *testing.T) {
	verifyNoLeaks(t)
	ingress, pushes := startIngress(t)
	f := startFleet(t, simOptions{Devices: 2, Interval: time.Hour, Format: simJSON, NamePrefix: "node-",
		Push: "coap://" + ingress.String() + "/telemetry/{device}/{metric}"})
	got := map[string]simPush{}
	for range 6 {
		p := nextPush(t, pushes, 10*time.Second)
		got[p.path] = p
	}
	for _, d := range f.Devices() {
		for _, m := range []string{"temp", "humidity", "battery"} {
			p, ok := got["/telemetry/"+d.name+"/"+m]
			if !ok {
				t.Fatalf("no push of %s's %s; got %v", d.name, m, got)
			}
			if p.peer.String() != d.Addr().String() {
				t.Errorf("%s pushed %s from %v, not from the socket it serves on (%v)", d.name, m, p.peer, d.Addr())
			}
			if p.cf != message.AppJSON || !strings.Contains(p.payload, `"value":`) {
				t.Errorf("%s %s: Content-Format %v payload %q", d.name, m, p.cf, p.payload)
			}
		}
	}
	d := f.Devices()[1]
	resp, err := commandLED(t, got["/telemetry/node-1/temp"], "on", 5*time.Second)
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("command back to the push's address: %v %v", resp, err)
	}
	if !ledOf(d) {
		t.Error("LED still off after the command")
	}
}

// TestSimPushDTLS: over coaps the device is a DTLS client with its PSK
// identity on its one socket; a command comes back on the session its push
// opened, and after a sleep (socket closed, session gone) the next wake
// handshakes again from the same port and is reachable again.
func TestSimPushDTLS(t *testing.T) {
	verifyNoLeaks(t)
	key, err := keys.ParseKey("hex:a0a1a2a3a4a5a6a7")
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := dtls.NewServerConn(udp, dtls.ServerConfig{PSK: dtls.NewPSKStore(map[string]dtls.Secret{"node-0": key})})
	if err != nil {
		t.Fatal(err)
	}
	ingress, pushes := startIngressOn(t, sc)
	var logs testkit.SyncBuffer
	f := startFleet(t, simOptions{Devices: 1, Interval: time.Hour, Sleep: 2500 * time.Millisecond, Awake: 1500 * time.Millisecond,
		PSK: key, PSKIdentityPrefix: "node-",
		Push:   "coaps://" + ingress.String() + "/up/{device}/{metric}",
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	d := f.Devices()[0]
	if d.DTLSAddr() != nil {
		t.Errorf("a pushing device has a coaps listener at %v", d.DTLSAddr())
	}
	for i, state := range []string{"on", "off"} {
		p := nextPush(t, pushes, 10*time.Second)
		if p.peer.String() != d.Addr().String() || p.identity != "node-0" {
			t.Fatalf("wake %d: push from %v identity %q, want %v node-0", i, p.peer, p.identity, d.Addr())
		}
		resp, err := commandLED(t, p, state, 5*time.Second)
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("wake %d: command on the push's session: %v %v", i, resp, err)
		}
		if ledOf(d) != (state == "on") {
			t.Errorf("wake %d: LED not %s", i, state)
		}
		for range 2 {
			nextPush(t, pushes, 5*time.Second)
		}
		if i == 0 {
			testkit.Eventually(t, 10*time.Second, "device asleep", func() bool { return strings.Contains(logs.String(), "sim device asleep") })
		}
	}
	// The second wake's session is a new handshake from the same address
	// (RFC 6347 §4.2.8), not the first one carried over.
	if st := sc.Stats(); st.HandshakesOK != 2 || st.SessionsActive != 1 {
		t.Errorf("handshakes %d, sessions %d; want 2 handshakes, 1 session", st.HandshakesOK, st.SessionsActive)
	}
}

// TestSimSleepBehindNAT: a sleepy device behind a NAT whose bindings expire
// while it sleeps receives nothing while asleep, and a command sent to the
// binding its next push opened reaches it during the awake window.
func TestSimSleepBehindNAT(t *testing.T) {
	verifyNoLeaks(t)
	ingress, pushes := startIngress(t)
	const sleep, awake, idle = 4 * time.Second, 1200 * time.Millisecond, 500 * time.Millisecond
	nat := peer.StartNAT(t, ingress, idle)
	var logs testkit.SyncBuffer
	f := startFleet(t, simOptions{Devices: 1, Interval: time.Hour, Sleep: sleep, Awake: awake,
		Push:   "coap://" + nat.Addr().String() + "/up/{device}/{metric}",
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	d := f.Devices()[0]

	first := nextPush(t, pushes, 10*time.Second)
	if first.peer.String() == d.Addr().String() {
		t.Fatalf("push came from the device's own port %v, not through the NAT", first.peer)
	}
	for range 2 {
		nextPush(t, pushes, 5*time.Second)
	}
	// Asleep: the radio is off; even sent straight to its port, past the
	// NAT, a command goes nowhere. (A single transmission: the first
	// retransmission would come after 2 s.)
	testkit.Eventually(t, 10*time.Second, "device asleep", func() bool { return strings.Contains(logs.String(), "sim device asleep") })
	direct := first
	direct.peer = d.Addr()
	if resp, err := commandLED(t, direct, "on", 700*time.Millisecond); err == nil {
		t.Fatalf("a sleeping device answered %v", resp)
	}
	testkit.Eventually(t, 10*time.Second, "NAT binding expired", func() bool { return nat.Expired() > 0 })

	// The next wake's push opens a new binding; the command goes there.
	second := nextPush(t, pushes, 2*sleep)
	if second.at.Sub(first.at) < sleep-awake {
		t.Errorf("second push %v after the first, want about the sleep period %v", second.at.Sub(first.at), sleep)
	}
	if second.peer.String() == d.Addr().String() {
		t.Fatalf("push came from the device's own port %v, not through the NAT", second.peer)
	}
	resp, err := commandLED(t, second, "on", awake)
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("command after the wake's push: %v %v", resp, err)
	}
	if !ledOf(d) {
		t.Error("LED still off after the command")
	}
	if n := strings.Count(logs.String(), "msg=\"sim command\""); n != 1 {
		t.Errorf("device logged %d commands, want 1:\n%s", n, logs.String())
	}
}

// TestSimSleepyReboot: a reboot while asleep resets the device (LED off)
// and it wakes and pushes on schedule.
func TestSimSleepyReboot(t *testing.T) {
	verifyNoLeaks(t)
	ingress, pushes := startIngress(t)
	var logs testkit.SyncBuffer
	f := startFleet(t, simOptions{Devices: 1, Interval: time.Hour, Sleep: 2 * time.Second, Awake: time.Second,
		Push:   "coap://" + ingress.String() + "/up/{device}/{metric}",
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	d := f.Devices()[0]
	first := nextPush(t, pushes, 10*time.Second)
	if resp, err := commandLED(t, first, "on", 5*time.Second); err != nil || resp.Code != message.Changed {
		t.Fatalf("command while awake: %v %v", resp, err)
	}
	testkit.Eventually(t, 10*time.Second, "device asleep", func() bool { return strings.Contains(logs.String(), "sim device asleep") })
	if err := f.Reboot(0); err != nil {
		t.Fatalf("reboot while asleep: %v", err)
	}
	if ledOf(d) {
		t.Error("LED on after a reboot")
	}
	for range 5 { // the rest of the first wake's pushes, then the next wake's
		nextPush(t, pushes, 5*time.Second)
	}
	if err := f.Reboot(0); err != nil {
		t.Errorf("reboot after the wake: %v", err)
	}
}
