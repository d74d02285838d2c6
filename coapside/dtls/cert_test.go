package dtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func TestCertificateHandshakes(t *testing.T) {
	ca := testkit.NewCA(t, "bridge test CA")
	other := testkit.NewCA(t, "some other CA")
	serverCert := ca.Issue(t, testkit.Leaf{CN: "bridge", Usage: x509.ExtKeyUsageServerAuth, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	good := ca.Issue(t, testkit.Leaf{CN: "greenhouse-1", Usage: x509.ExtKeyUsageClientAuth})
	untrusted := other.Issue(t, testkit.Leaf{CN: "greenhouse-1", Usage: x509.ExtKeyUsageClientAuth})
	expired := ca.Issue(t, testkit.Leaf{CN: "greenhouse-1", Usage: x509.ExtKeyUsageClientAuth,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	pinned := other.Issue(t, testkit.Leaf{CN: "pinned-device", Usage: x509.ExtKeyUsageClientAuth})

	tests := []struct {
		name         string
		suite        CipherSuite
		clientCert   *tls.Certificate
		clientRoots  *x509.CertPool
		clientPins   []Pin
		wantIdentity string
		wantServer   FailReason // checked when wantIdentity == ""
	}{
		{name: "ccm8", suite: DefaultCertSuites[0], clientCert: &good, clientRoots: ca.Pool, wantIdentity: "greenhouse-1"},
		{name: "ccm", suite: DefaultCertSuites[1], clientCert: &good, clientRoots: ca.Pool, wantIdentity: "greenhouse-1"},
		{name: "gcm", suite: DefaultCertSuites[2], clientCert: &good, clientRoots: ca.Pool, wantIdentity: "greenhouse-1"},
		{name: "gcm384", suite: DefaultCertSuites[3], clientCert: &good, clientRoots: ca.Pool, wantIdentity: "greenhouse-1"},
		{name: "pinned client", clientCert: &pinned, clientRoots: ca.Pool, wantIdentity: "pinned-device"},
		{name: "server pinned by client", clientCert: &good, clientPins: []Pin{keys.PinOf(serverCert.Leaf)}, wantIdentity: "greenhouse-1"},
		{name: "untrusted client", clientCert: &untrusted, clientRoots: ca.Pool, wantServer: FailBadCert},
		{name: "expired client", clientCert: &expired, clientRoots: ca.Pool, wantServer: FailBadCert},
		{name: "no client cert", clientRoots: ca.Pool, wantServer: FailBadCert},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scfg := ServerConfig{
				Certificate: &serverCert,
				ClientCAs:   ca.Pool,
				ClientPins:  []Pin{keys.PinOf(pinned.Leaf)},
				Limits:      fastLimits(t),
			}
			if tt.suite != 0 {
				scfg.CipherSuites = []CipherSuite{tt.suite}
			}
			srv := startServer(t, scfg)
			done := echo(t, srv)
			defer func() { _ = srv.Close(); <-done }()
			cli := startClient(t, ClientConfig{
				Credentials: Credentials{Certificate: tt.clientCert, RootCAs: tt.clientRoots, Pins: tt.clientPins},
				Limits:      fastLimits(t),
			})
			got, err := roundTrip(t, cli, srv.LocalAddr(), "cert")
			if tt.wantIdentity != "" {
				if err != nil || got != "echo:cert" {
					t.Fatalf("round trip: %q, %v", got, err)
				}
				if id, ok := srv.PeerIdentity(cli.LocalAddr()); !ok || id != tt.wantIdentity {
					t.Fatalf("server PeerIdentity = %q, %v; want %q", id, ok, tt.wantIdentity)
				}
				wantSrvID := "bridge"
				if id, ok := cli.PeerIdentity(srv.LocalAddr()); !ok || id != wantSrvID {
					t.Fatalf("client PeerIdentity = %q, %v; want %q", id, ok, wantSrvID)
				}
				return
			}
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("err = %v, want handshake failure", err)
			}
			testkit.Eventually(t, 3*time.Second, "server failure counted", func() bool { return srv.Stats().TotalFailed() == 1 })
			if st := srv.Stats(); st.Failed(tt.wantServer) != 1 || st.SessionsActive != 0 {
				t.Fatalf("server stats %+v, want one %v", st, tt.wantServer)
			}
		})
	}
}

// TestClientRejectsServer: the client side refuses untrusted, expired or
// unpinned server certificates and reports bad_cert.
func TestClientRejectsServer(t *testing.T) {
	ca := testkit.NewCA(t, "CA")
	other := testkit.NewCA(t, "other CA")
	good := ca.Issue(t, testkit.Leaf{CN: "bridge", Usage: x509.ExtKeyUsageServerAuth})
	expired := ca.Issue(t, testkit.Leaf{CN: "bridge", Usage: x509.ExtKeyUsageServerAuth,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	tests := []struct {
		name   string
		server tls.Certificate
		cred   Credentials
	}{
		{name: "untrusted", server: good, cred: Credentials{RootCAs: other.Pool}},
		{name: "expired", server: expired, cred: Credentials{RootCAs: ca.Pool}},
		{name: "wrong pin", server: good, cred: Credentials{Pins: []Pin{keys.PinOf(ca.Cert)}}},
		{name: "wrong name", server: good, cred: Credentials{RootCAs: ca.Pool, ServerName: "elsewhere.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, ServerConfig{Certificate: &tt.server, Limits: fastLimits(t)})
			cli := startClient(t, ClientConfig{Credentials: tt.cred, Limits: fastLimits(t)})
			_, err := cli.WriteTo([]byte("x"), srv.LocalAddr())
			var he *HandshakeError
			if !errors.As(err, &he) || he.Reason != FailBadCert || !errors.Is(err, ErrBadCertificate) {
				t.Fatalf("err = %v, want bad_cert handshake error", err)
			}
			if cs := cli.Stats(); cs.Failed(FailBadCert) != 1 {
				t.Fatalf("client stats %+v", cs)
			}
		})
	}
}

// TestMixedPSKAndCert serves PSK and certificate clients on one listener.
func TestMixedPSKAndCert(t *testing.T) {
	ca := testkit.NewCA(t, "CA")
	serverCert := ca.Issue(t, testkit.Leaf{CN: "bridge", Usage: x509.ExtKeyUsageServerAuth})
	dev := ca.Issue(t, testkit.Leaf{CN: "cert-device", Usage: x509.ExtKeyUsageClientAuth})
	scfg := pskServerConfig(t)
	scfg.Certificate = &serverCert
	scfg.ClientCAs = ca.Pool
	srv := startServer(t, scfg)
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	pskCli := startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")}, Limits: fastLimits(t)})
	certCli := startClient(t, ClientConfig{Credentials: Credentials{Certificate: &dev, RootCAs: ca.Pool}, Limits: fastLimits(t)})
	for _, c := range []struct {
		cli *ClientConn
		id  string
	}{{pskCli, "dev-2"}, {certCli, "cert-device"}} {
		if got, err := roundTrip(t, c.cli, srv.LocalAddr(), "m"); err != nil || got != "echo:m" {
			t.Fatalf("%s: %q, %v", c.id, got, err)
		}
		if id, _ := srv.PeerIdentity(c.cli.LocalAddr()); id != c.id {
			t.Fatalf("identity %q, want %q", id, c.id)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	ca := testkit.NewCA(t, "CA")
	c := ca.Issue(t, testkit.Leaf{CN: "x", Usage: x509.ExtKeyUsageServerAuth})
	rsaLike := tls.Certificate{Certificate: c.Certificate, PrivateKey: "not a key"}
	serverTests := []ServerConfig{
		{},
		{IdentityHint: "h", Certificate: &c},
		{Certificate: &rsaLike},
		{Certificate: &tls.Certificate{}},
		{PSK: NewPSKStore(nil), ClientCAs: ca.Pool},
	}
	for i, cfg := range serverTests {
		if _, err := Listen("udp", "127.0.0.1:0", cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("server config %d: err = %v, want ErrConfig", i, err)
		}
	}
	clientTests := []Credentials{
		{},
		{PSKIdentity: "a"},
		{PSK: mustKey(t, "k")},
		{Certificate: &c},
		{PSKIdentity: "a", PSK: mustKey(t, "k"), Certificate: &rsaLike},
	}
	for i, cr := range clientTests {
		if _, err := NewClientConn("127.0.0.1:0", ClientConfig{Credentials: cr}); !errors.Is(err, ErrConfig) {
			t.Errorf("client credentials %d: err = %v, want ErrConfig", i, err)
		}
	}
	if _, err := ParseCipherSuite("TLS_PSK_WITH_AES_128_CBC_SHA256"); !errors.Is(err, ErrConfig) {
		t.Error("CBC suite accepted")
	}
	if s, err := ParseCipherSuite("TLS_PSK_WITH_AES_128_CCM_8"); err != nil || s != DefaultPSKSuites[0] {
		t.Errorf("ParseCipherSuite: %v %v", s, err)
	}
}
