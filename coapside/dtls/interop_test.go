package dtls

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// The interop tests run libcoap's GnuTLS binaries against our conns. The
// CoAP on top is a test-only minimum: a request of header + token + options
// and an ACK 2.05 carrying the peer's authenticated identity.

// coapRespond answers CON requests on conn with a piggybacked 2.05 whose
// payload is "hello <identity>" (RFC 7252 §5.2.1), until conn is closed.
func coapRespond(conn *ServerConn) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, addr, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			req := buf[:n]
			// RFC 7252 §3: Ver(2) T(2) TKL(4) | Code | Message ID | Token
			if n < 4 || req[0]>>6 != 1 || req[0]>>4&3 != 0 || req[0]&0x0f > 8 || n < 4+int(req[0]&0x0f) {
				continue // not a CON request this responder understands
			}
			tkl := int(req[0] & 0x0f)
			id, _ := conn.PeerIdentity(addr)
			resp := []byte{0x60 | byte(tkl), 0x45, req[2], req[3]} // ACK, 2.05 Content, same MID
			resp = append(resp, req[4:4+tkl]...)                   // same token
			resp = append(resp, 0xff)                              // payload marker
			resp = append(resp, "hello "+id...)
			_, _ = conn.WriteTo(resp, addr)
		}
	}()
	return done
}

// coapGetRoot is CON GET / with MID 0x1234 and token 0xbeef.
var coapGetRoot = []byte{0x42, 0x01, 0x12, 0x34, 0xbe, 0xef}

// coapExchange sends coapGetRoot through c and returns the code and payload
// of the matching ACK.
func coapExchange(t *testing.T, c *ClientConn, addr net.Addr) (byte, string, error) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(8 * time.Second)); err != nil {
		return 0, "", err
	}
	if _, err := c.WriteTo(coapGetRoot, addr); err != nil {
		return 0, "", err
	}
	buf := make([]byte, 2048)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return 0, "", err
		}
		m := buf[:n]
		if n < 6 || m[0]>>4&3 != 2 || binary.BigEndian.Uint16(m[2:4]) != 0x1234 {
			continue // not our ACK
		}
		if !bytes.Equal(m[4:4+int(m[0]&0x0f)], coapGetRoot[4:]) {
			return 0, "", fmt.Errorf("token mismatch in %x", m)
		}
		payload := ""
		if i := bytes.IndexByte(m[4+int(m[0]&0x0f):], 0xff); i >= 0 {
			payload = string(m[4+int(m[0]&0x0f)+i+1:])
		}
		return m[1], payload, nil
	}
}

// runLibcoapClient runs coap-client-gnutls with args against url and
// returns its output.
func runLibcoapClient(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := peer.Require(t, "coap-client-gnutls")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

func TestInteropLibcoapClientPSK(t *testing.T) {
	peer.Require(t, "coap-client-gnutls")
	scfg := ServerConfig{
		PSK:          NewPSKStore(map[string]Secret{"libcoap-dev": mustKey(t, "secretPSK")}),
		IdentityHint: "bridge",
		Limits:       fastLimits(t),
	}
	scfg.HandshakeTimeout = 2 * time.Second
	srv := startServer(t, scfg)
	done := coapRespond(srv)
	defer func() { _ = srv.Close(); <-done }()
	url := fmt.Sprintf("coaps://127.0.0.1:%d/x", srv.LocalAddr().(*net.UDPAddr).Port)

	out, err := runLibcoapClient(t, "-m", "get", "-B", "5", "-k", "secretPSK", "-u", "libcoap-dev", url)
	if err != nil || !strings.Contains(out, "hello libcoap-dev") {
		t.Fatalf("coap-client: err=%v output=%q", err, out)
	}
	if st := srv.Stats(); st.HandshakesOK != 1 {
		t.Fatalf("stats %+v", st)
	}

	out, _ = runLibcoapClient(t, "-m", "get", "-B", "3", "-k", "wrongPSK", "-u", "libcoap-dev", url)
	if strings.Contains(out, "hello") {
		t.Fatalf("wrong key answered: %q", out)
	}
	testkit.Eventually(t, 5*time.Second, "bad psk counted", func() bool { return srv.Stats().Failed(FailBadPSK) >= 1 })

	out, _ = runLibcoapClient(t, "-m", "get", "-B", "3", "-k", "secretPSK", "-u", "stranger", url)
	if strings.Contains(out, "hello") {
		t.Fatalf("unknown identity answered: %q", out)
	}
	testkit.Eventually(t, 5*time.Second, "unknown identity counted", func() bool {
		return srv.Stats().Failed(FailUnknownIdentity) >= 1
	})
}

func TestInteropLibcoapClientCert(t *testing.T) {
	peer.Require(t, "coap-client-gnutls")
	dir := t.TempDir()
	ca := testkit.NewCA(t, "interop CA")
	caFile := ca.WriteCert(t, dir, "ca.pem")
	serverCert := ca.Issue(t, testkit.Leaf{CN: "127.0.0.1", Usage: x509.ExtKeyUsageServerAuth, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	dev := ca.Issue(t, testkit.Leaf{CN: "cert-device", Usage: x509.ExtKeyUsageClientAuth})
	devCert, devKey := testkit.WritePair(t, dir, "dev", dev)
	stranger := testkit.NewCA(t, "stranger CA").Issue(t, testkit.Leaf{CN: "cert-device", Usage: x509.ExtKeyUsageClientAuth})
	strCert, strKey := testkit.WritePair(t, dir, "stranger", stranger)

	srv := startServer(t, ServerConfig{Certificate: &serverCert, ClientCAs: ca.Pool, Limits: fastLimits(t)})
	done := coapRespond(srv)
	defer func() { _ = srv.Close(); <-done }()
	url := fmt.Sprintf("coaps://127.0.0.1:%d/x", srv.LocalAddr().(*net.UDPAddr).Port)

	out, err := runLibcoapClient(t, "-m", "get", "-B", "5", "-c", devCert, "-j", devKey, "-C", caFile, url)
	if err != nil || !strings.Contains(out, "hello cert-device") {
		t.Fatalf("coap-client: err=%v output=%q", err, out)
	}
	out, _ = runLibcoapClient(t, "-m", "get", "-B", "3", "-c", strCert, "-j", strKey, "-C", caFile, url)
	if strings.Contains(out, "hello") {
		t.Fatalf("untrusted client certificate answered: %q", out)
	}
	testkit.Eventually(t, 5*time.Second, "bad cert counted", func() bool { return srv.Stats().Failed(FailBadCert) >= 1 })
}

// TestInteropLibcoapClientPSKBesideClientCerts: one listener with PSKs and
// client certificate verification takes both kinds of client: a libcoap
// PSK client (which offers certificate suites too) gets its PSK handshake,
// not a demand for a certificate it does not have; a certificate client
// still has to present a trusted one.
func TestInteropLibcoapClientPSKBesideClientCerts(t *testing.T) {
	peer.Require(t, "coap-client-gnutls")
	dir := t.TempDir()
	ca := testkit.NewCA(t, "interop CA")
	caFile := ca.WriteCert(t, dir, "ca.pem")
	serverCert := ca.Issue(t, testkit.Leaf{CN: "127.0.0.1", Usage: x509.ExtKeyUsageServerAuth, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	dev := ca.Issue(t, testkit.Leaf{CN: "cert-device", Usage: x509.ExtKeyUsageClientAuth})
	devCert, devKey := testkit.WritePair(t, dir, "dev", dev)

	srv := startServer(t, ServerConfig{
		PSK:         NewPSKStore(map[string]Secret{"psk-device": mustKey(t, "secretPSK")}),
		Certificate: &serverCert, ClientCAs: ca.Pool, Limits: fastLimits(t),
	})
	done := coapRespond(srv)
	defer func() { _ = srv.Close(); <-done }()
	url := fmt.Sprintf("coaps://127.0.0.1:%d/x", srv.LocalAddr().(*net.UDPAddr).Port)

	out, err := runLibcoapClient(t, "-m", "get", "-B", "5", "-k", "secretPSK", "-u", "psk-device", url)
	if err != nil || !strings.Contains(out, "hello psk-device") {
		t.Fatalf("PSK client: err=%v output=%q", err, out)
	}
	out, err = runLibcoapClient(t, "-m", "get", "-B", "5", "-c", devCert, "-j", devKey, "-C", caFile, url)
	if err != nil || !strings.Contains(out, "hello cert-device") {
		t.Fatalf("certificate client: err=%v output=%q", err, out)
	}
	out, _ = runLibcoapClient(t, "-m", "get", "-B", "3", "-C", caFile, url)
	if strings.Contains(out, "hello") {
		t.Fatalf("a client with neither key nor certificate answered: %q", out)
	}
	if st := srv.Stats(); st.HandshakesOK != 2 {
		t.Fatalf("%d handshakes completed, want 2", st.HandshakesOK)
	}
}

// startLibcoapServer runs coap-server-gnutls with args on a free port pair
// (libcoap serves DTLS on port+1) and returns the DTLS address.
func startLibcoapServer(t *testing.T, args ...string) *net.UDPAddr {
	t.Helper()
	bin := peer.Require(t, "coap-server-gnutls")
	port := freePortPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, append([]string{"-A", "127.0.0.1", "-p", fmt.Sprint(port)}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("coap-server output:\n%s", out.String())
		}
	})
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1}
}

// freePortPair finds a port p such that UDP p and p+1 are free on
// 127.0.0.1.
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1})
		_ = a.Close()
		if err == nil {
			_ = b.Close()
			return p
		}
	}
	t.Fatal("no free port pair")
	return 0
}

func libcoapClientLimits(t *testing.T) Limits {
	lim := fastLimits(t)
	lim.HandshakeTimeout = 8 * time.Second // covers coap-server start-up
	lim.FlightInterval = 200 * time.Millisecond
	return lim
}

func TestInteropLibcoapServerPSK(t *testing.T) {
	addr := startLibcoapServer(t, "-k", "secretPSK", "-h", "libcoap")
	cli := startClient(t, ClientConfig{
		Credentials: Credentials{PSKIdentity: "bridge", PSK: mustKey(t, "secretPSK")},
		Limits:      libcoapClientLimits(t),
	})
	for i := range 3 { // session reuse across requests
		code, payload, err := coapExchange(t, cli, addr)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if code != 0x45 || !strings.Contains(payload, "libcoap") {
			t.Fatalf("request %d: code %d.%02d payload %q", i, code>>5, code&0x1f, payload)
		}
	}
	if cs := cli.Stats(); cs.HandshakesOK != 1 {
		t.Fatalf("client handshakes %d, want 1 (session reuse)", cs.HandshakesOK)
	}

	bad := startClient(t, ClientConfig{
		Credentials: Credentials{PSKIdentity: "bridge", PSK: mustKey(t, "wrongPSK")},
		Limits:      libcoapClientLimits(t),
	})
	_, _, err := coapExchange(t, bad, addr)
	var he *HandshakeError
	if !errors.As(err, &he) || he.Reason != FailBadPSK {
		t.Fatalf("wrong key: %v, want bad_psk handshake error", err)
	}
}

// TestInteropLibcoapServerNoResumption: coap-server-gnutls keeps no
// session cache, so the session the client offers when it handshakes
// again is refused; the client falls back to a full handshake. The
// server sends its flight one message per datagram, which a pion client
// with a session store mistakes for a resumption unless the flight is
// delivered whole (flightHold).
func TestInteropLibcoapServerNoResumption(t *testing.T) {
	addr := startLibcoapServer(t, "-k", "secretPSK", "-h", "libcoap")
	cli := startClient(t, ClientConfig{
		Credentials: Credentials{PSKIdentity: "bridge", PSK: mustKey(t, "secretPSK")},
		Limits:      libcoapClientLimits(t),
	})
	for i := range 2 {
		code, payload, err := coapExchange(t, cli, addr)
		if err != nil || code != 0x45 || !strings.Contains(payload, "libcoap") {
			t.Fatalf("exchange %d: code %#x payload %q err %v", i, code, payload, err)
		}
		cli.CloseSession(addr)
	}
	if s := cli.Stats(); s.HandshakesOK != 2 || s.HandshakesResumed != 0 {
		t.Fatalf("handshakes %d, resumed %d; want 2 full", s.HandshakesOK, s.HandshakesResumed)
	}
}

func TestInteropLibcoapServerCert(t *testing.T) {
	peer.Require(t, "coap-server-gnutls")
	dir := t.TempDir()
	ca := testkit.NewCA(t, "interop CA")
	caFile := ca.WriteCert(t, dir, "ca.pem")
	srvCert, srvKey := testkit.WritePair(t, dir, "server", ca.Issue(t, testkit.Leaf{CN: "libcoap-server",
		Usage: x509.ExtKeyUsageServerAuth, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}))
	addr := startLibcoapServer(t, "-c", srvCert, "-j", srvKey, "-C", caFile)
	dev := ca.Issue(t, testkit.Leaf{CN: "bridge", Usage: x509.ExtKeyUsageClientAuth})

	cli := startClient(t, ClientConfig{
		Credentials: Credentials{Certificate: &dev, RootCAs: ca.Pool},
		Limits:      libcoapClientLimits(t),
	})
	code, payload, err := coapExchange(t, cli, addr)
	if err != nil || code != 0x45 || !strings.Contains(payload, "libcoap") {
		t.Fatalf("cert exchange: code %#x payload %q err %v", code, payload, err)
	}
	if id, ok := cli.PeerIdentity(addr); !ok || id != "libcoap-server" {
		t.Fatalf("server identity %q %v", id, ok)
	}

	other := testkit.NewCA(t, "other CA")
	distrust := startClient(t, ClientConfig{
		Credentials: Credentials{Certificate: &dev, RootCAs: other.Pool},
		Limits:      libcoapClientLimits(t),
	})
	_, _, err = coapExchange(t, distrust, addr)
	var he *HandshakeError
	if !errors.As(err, &he) || he.Reason != FailBadCert {
		t.Fatalf("untrusted server: %v, want bad_cert", err)
	}
}

// TestInteropLibcoapClientDuringFlood: coap-client-gnutls, which returns
// the cookie like any RFC 6347 client, completes its handshake and request
// within one second (its -B limit) while 2,000 ClientHellos from other
// ports arrive.
func TestInteropLibcoapClientDuringFlood(t *testing.T) {
	peer.Require(t, "coap-client-gnutls")
	if testing.Short() {
		t.Skip("flood")
	}
	scfg := ServerConfig{
		PSK:          NewPSKStore(map[string]Secret{"libcoap-dev": mustKey(t, "secretPSK")}),
		IdentityHint: "bridge",
		// The bridge's defaults, but a spoofed flood comes from many
		// addresses and on loopback from one: the per-source bound is
		// lifted to the total.
		Limits: Limits{Logger: testLogger(t), MaxHandshakesPerSource: 128},
	}
	srv := startServer(t, scfg)
	done := coapRespond(srv)
	defer func() { _ = srv.Close(); <-done }()
	url := fmt.Sprintf("coaps://127.0.0.1:%d/x", srv.LocalAddr().(*net.UDPAddr).Port)

	flooded := flood(t, srv.LocalAddr(), 2000, 4*time.Second)
	testkit.Eventually(t, 5*time.Second, "flood fills the handshake slots", func() bool {
		return srv.Stats().HandshakesActive >= 128
	})
	// A run every 700 ms until the flood is over.
	var took []time.Duration
	tick := time.NewTicker(700 * time.Millisecond)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-flooded:
			running = false
		case <-tick.C:
			t0 := time.Now()
			out, err := runLibcoapClient(t, "-m", "get", "-B", "1", "-k", "secretPSK", "-u", "libcoap-dev", url)
			if err != nil || !strings.Contains(out, "hello libcoap-dev") {
				t.Fatalf("coap-client during flood: err=%v output=%q stats %+v", err, out, srv.Stats())
			}
			took = append(took, time.Since(t0))
		}
	}
	st := srv.Stats()
	t.Logf("coap-client-gnutls runs during the flood took %v; stats %+v", took, st)
	if len(took) < 3 || st.HandshakesOK != uint64(len(took)) || st.RefusedLimit != 0 || st.HandshakesEvicted < 1000 {
		t.Fatalf("%d runs, stats %+v", len(took), st)
	}
}
