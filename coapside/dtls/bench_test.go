package dtls

import (
	"context"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func benchHandshakes(b *testing.B, scfg ServerConfig, cred Credentials) {
	srv := startServer(b, scfg)
	done := echo(b, srv)
	defer func() { _ = srv.Close(); <-done }()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		cli, err := NewClientConn("127.0.0.1:0", ClientConfig{Credentials: cred, Limits: Limits{Logger: discardLogger()}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = cli.Handshake(ctx, srv.LocalAddr())
		cancel()
		_ = cli.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

// BenchmarkHandshakePSK measures full PSK handshakes (with the cookie
// exchange) over loopback, client and server in one process.
func BenchmarkHandshakePSK(b *testing.B) {
	scfg := pskServerConfig(b)
	scfg.Logger = discardLogger()
	benchHandshakes(b, scfg, Credentials{PSKIdentity: "dev-2", PSK: mustKey(b, "secretkey")})
}

// BenchmarkHandshakeECDSA measures mutual-certificate ECDHE-ECDSA P-256
// handshakes over loopback.
func BenchmarkHandshakeECDSA(b *testing.B) {
	ca := testkit.NewCA(b, "bench CA")
	sc := ca.Issue(b, testkit.Leaf{CN: "bridge", Usage: x509.ExtKeyUsageServerAuth})
	cc := ca.Issue(b, testkit.Leaf{CN: "dev", Usage: x509.ExtKeyUsageClientAuth})
	benchHandshakes(b, ServerConfig{Certificate: &sc, ClientCAs: ca.Pool, Limits: Limits{Logger: discardLogger()}},
		Credentials{Certificate: &cc, RootCAs: ca.Pool})
}

func benchRoundTrips(b *testing.B, cli net.PacketConn, addr net.Addr) {
	msg := make([]byte, 64) // a typical small CoAP request
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := cli.WriteTo(msg, addr); err != nil {
			b.Fatal(err)
		}
		if _, _, err := cli.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
}

// BenchmarkRoundTripDTLS measures request/response round trips over an
// established PSK session (AES-128-CCM-8).
func BenchmarkRoundTripDTLS(b *testing.B) {
	scfg := pskServerConfig(b)
	scfg.Logger = discardLogger()
	srv := startServer(b, scfg)
	done := echo(b, srv)
	defer func() { _ = srv.Close(); <-done }()
	cli := startClient(b, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(b, "secretkey")},
		Limits: Limits{Logger: discardLogger()}})
	if err := cli.Handshake(context.Background(), srv.LocalAddr()); err != nil {
		b.Fatal(err)
	}
	benchRoundTrips(b, cli, srv.LocalAddr())
}

// BenchmarkRoundTripUDP is the same round trip over plain UDP sockets, the
// baseline for BenchmarkRoundTripDTLS.
func BenchmarkRoundTripUDP(b *testing.B) {
	srv, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, addr, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(append([]byte("echo:"), buf[:n]...), addr)
		}
	}()
	defer func() { _ = srv.Close(); <-done }()
	cli, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	benchRoundTrips(b, cli, srv.LocalAddr())
}
