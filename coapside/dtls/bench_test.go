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

// benchRehandshakes measures one client handshaking again and again with
// a server: full handshakes when resume is false, abbreviated ones (after
// one full handshake) when it is. Between iterations, with the timer
// stopped, the session is ended (close_notify) and both ends are let
// finish. The time is the client's, until its handshake completes; allocs
// are both ends' (one process). It also reports the handshake datagrams
// and bytes on the wire, both ways.
func benchRehandshakes(b *testing.B, scfg ServerConfig, cred Credentials, resume bool) {
	scfg.Logger = discardLogger()
	srv, w := startCountedServer(b, scfg)
	climits := Limits{Logger: discardLogger()}
	if !resume {
		climits.ResumeSessions = -1
	}
	cli := startClient(b, ClientConfig{Credentials: cred, Limits: climits})
	addr := srv.LocalAddr()
	if err := handshakeBoth(b, srv, cli, addr); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	w.take()
	for b.Loop() {
		b.StopTimer()
		endSession(b, srv, cli, addr)
		ok := srv.Stats().HandshakesOK
		b.StartTimer()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := cli.Handshake(ctx, addr)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		testkit.Eventually(b, 5*time.Second, "server handshake done", func() bool { return srv.Stats().HandshakesOK > ok })
		b.StartTimer()
	}
	b.StopTimer()
	wire := w.take()
	s := srv.Stats()
	if resume && s.HandshakesResumed != uint64(b.N) || !resume && s.HandshakesResumed != 0 {
		b.Fatalf("resume %v: %d of %d handshakes resumed", resume, s.HandshakesResumed, s.HandshakesOK)
	}
	b.ReportMetric(float64(wire.hsDgrams)/float64(b.N), "dgrams/hs")
	b.ReportMetric(float64(wire.hsBytes)/float64(b.N), "wireB/hs")
}

// pskBench and certBench are the server and client of the handshake
// benchmarks. The certificate server asks for no client certificate:
// pion never resumes a session whose client sent one.
func pskBench(b *testing.B) (ServerConfig, Credentials) {
	return pskServerConfig(b), Credentials{PSKIdentity: "dev-2", PSK: mustKey(b, "secretkey")}
}

func certBench(b *testing.B) (ServerConfig, Credentials) {
	ca := testkit.NewCA(b, "bench CA")
	sc := ca.Issue(b, testkit.Leaf{CN: "bridge", Usage: x509.ExtKeyUsageServerAuth})
	return ServerConfig{Certificate: &sc}, Credentials{RootCAs: ca.Pool}
}

// BenchmarkHandshakeFull measures full handshakes of a returning client
// (cookie exchange, key exchange; ECDSA: the server's certificate and
// signature), the baseline of BenchmarkHandshakeResumed.
func BenchmarkHandshakeFull(b *testing.B) {
	b.Run("psk", func(b *testing.B) { s, c := pskBench(b); benchRehandshakes(b, s, c, false) })
	b.Run("ecdsa", func(b *testing.B) { s, c := certBench(b); benchRehandshakes(b, s, c, false) })
}

// BenchmarkHandshakeResumed measures abbreviated handshakes resuming a
// cached session (RFC 5246 §7.3): one round trip, no cookie, no key
// exchange, certificate or signature.
func BenchmarkHandshakeResumed(b *testing.B) {
	b.Run("psk", func(b *testing.B) { s, c := pskBench(b); benchRehandshakes(b, s, c, true) })
	b.Run("ecdsa", func(b *testing.B) { s, c := certBench(b); benchRehandshakes(b, s, c, true) })
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
