package dtls

import (
	"errors"
	"net"
	"testing"
	"time"
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
