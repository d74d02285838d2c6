package dtls

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func pskServerConfig(t testing.TB) ServerConfig {
	return ServerConfig{
		PSK: NewPSKStore(map[string]Secret{
			"dev-1": mustKey(t, "hex:00112233445566778899aabbccddeeff"),
			"dev-2": mustKey(t, "secretkey"),
		}),
		IdentityHint: "bridge",
		Limits:       fastLimits(t),
	}
}

func TestPSKRoundTrip(t *testing.T) {
	for _, suite := range DefaultPSKSuites {
		t.Run(CipherSuiteName(suite), func(t *testing.T) {
			scfg := pskServerConfig(t)
			scfg.CipherSuites = []CipherSuite{suite}
			srv := startServer(t, scfg)
			done := echo(t, srv)
			cli := startClient(t, ClientConfig{
				Credentials: Credentials{PSKIdentity: "dev-1", PSK: mustKey(t, "hex:00112233445566778899aabbccddeeff")},
				Limits:      fastLimits(t),
			})
			for i, msg := range []string{"one", "two", "three"} {
				got, err := roundTrip(t, cli, srv.LocalAddr(), msg)
				if err != nil {
					t.Fatalf("round trip %d: %v", i, err)
				}
				if got != "echo:"+msg {
					t.Fatalf("got %q, want %q", got, "echo:"+msg)
				}
			}
			st := srv.Stats()
			if st.HandshakesOK != 1 || st.SessionsActive != 1 {
				t.Fatalf("session not reused: %+v", st)
			}
			if cs := cli.Stats(); cs.HandshakesOK != 1 {
				t.Fatalf("client handshakes = %d, want 1", cs.HandshakesOK)
			}
			id, ok := srv.PeerIdentity(cli.LocalAddr())
			if !ok || id != "dev-1" {
				t.Fatalf("PeerIdentity = %q, %v; want dev-1", id, ok)
			}
			_ = srv.Close()
			<-done
		})
	}
}

func TestServerWriteWithoutSession(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	_, err := srv.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9})
	if !errors.Is(err, ErrNoSession) {
		t.Fatalf("WriteTo without session: %v, want ErrNoSession", err)
	}
	if _, ok := srv.PeerIdentity(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}); ok {
		t.Fatal("PeerIdentity reported an identity without a session")
	}
}

func TestReadDeadlineAndClose(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	_ = srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, _, err := srv.ReadFrom(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ReadFrom after deadline: %v, want timeout", err)
	}
	_ = srv.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, _, err := srv.ReadFrom(make([]byte, 10))
		errc <- err
	}()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close: %v, want net.ErrClosed", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestIPv6Loopback(t *testing.T) {
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		peer.Unavailable(t, "no IPv6 loopback: %v", err)
	}
	srv, err := NewServerConn(pc, pskServerConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	cli, err := NewClientConn("[::1]:0", ClientConfig{
		Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")},
		Limits:      fastLimits(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if got, err := roundTrip(t, cli, srv.LocalAddr(), "v6"); err != nil || got != "echo:v6" {
		t.Fatalf("%q, %v", got, err)
	}
	if id, ok := srv.PeerIdentity(cli.LocalAddr()); !ok || id != "dev-2" {
		t.Fatalf("identity %q %v", id, ok)
	}
}

func TestPeerKeyUnmapsIPv4(t *testing.T) {
	a := &net.UDPAddr{IP: net.ParseIP("::ffff:127.0.0.1"), Port: 5684}
	b := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1).To4(), Port: 5684}
	c := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5685}
	if keyOf(a) != keyOf(b) {
		t.Fatal("mapped and plain IPv4 differ")
	}
	if keyOf(a) == keyOf(c) {
		t.Fatal("different ports share a key")
	}
	// Other addresses are keyed by network and text, not by identity.
	ip1, ip2 := &net.IPAddr{IP: net.ParseIP("192.0.2.1")}, &net.IPAddr{IP: net.ParseIP("192.0.2.1")}
	if keyOf(ip1) != keyOf(ip2) {
		t.Fatal("two equal non-UDP addresses differ")
	}
	if keyOf(fakeAddr("x")) == keyOf(fakeAddr("y")) {
		t.Fatal("different non-UDP addresses share a key")
	}
	if keyOf(fakeAddr("192.0.2.1")) == keyOf(ip1) {
		t.Fatal("the same text on different networks shares a key")
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "fake" }
func (a fakeAddr) String() string  { return string(a) }

// TestServerCloseSession: the server ends one session with close_notify;
// the client notices and its next write opens a new session.
func TestServerCloseSession(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	cli := startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")}, Limits: fastLimits(t)})
	if _, err := roundTrip(t, cli, srv.LocalAddr(), "a"); err != nil {
		t.Fatal(err)
	}
	if !srv.CloseSession(cli.LocalAddr()) {
		t.Fatal("CloseSession found no session")
	}
	if srv.CloseSession(cli.LocalAddr()) {
		t.Fatal("second CloseSession found a session")
	}
	testkit.Eventually(t, 2*time.Second, "client saw close_notify", func() bool { return cli.Stats().SessionsActive == 0 })
	if got, err := roundTrip(t, cli, srv.LocalAddr(), "b"); err != nil || got != "echo:b" {
		t.Fatalf("after close: %q, %v", got, err)
	}
	if cs := cli.Stats(); cs.HandshakesOK != 2 {
		t.Fatalf("client handshakes %d, want 2", cs.HandshakesOK)
	}
	if !cli.CloseSession(srv.LocalAddr()) {
		t.Fatal("client CloseSession found no session")
	}
	testkit.Eventually(t, 2*time.Second, "server saw close_notify", func() bool { return srv.Stats().SessionsActive == 0 })
}
