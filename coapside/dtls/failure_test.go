package dtls

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// TestPSKHandshakeFailures runs clients with bad credentials against one
// server and checks both ends refuse and count the right reason.
func TestPSKHandshakeFailures(t *testing.T) {
	tests := []struct {
		name       string
		identity   string
		key        string
		wantServer FailReason
	}{
		{name: "wrong key", identity: "dev-1", key: "hex:ffffffffffffffffffffffffffffffff", wantServer: FailBadPSK},
		{name: "unknown identity", identity: "intruder", key: "hex:00112233445566778899aabbccddeeff", wantServer: FailUnknownIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scfg := pskServerConfig(t)
			scfg.HandshakeTimeout = 1500 * time.Millisecond
			srv := startServer(t, scfg)
			done := echo(t, srv)
			lim := fastLimits(t)
			lim.HandshakeTimeout = 1500 * time.Millisecond
			cli := startClient(t, ClientConfig{
				Credentials: Credentials{PSKIdentity: tt.identity, PSK: mustKey(t, tt.key)},
				Limits:      lim,
			})
			_, err := cli.WriteTo([]byte("hello"), srv.LocalAddr())
			var he *HandshakeError
			if !errors.As(err, &he) || !errors.Is(err, ErrHandshake) {
				t.Fatalf("WriteTo err = %v, want *HandshakeError", err)
			}
			testkit.Eventually(t, 3*time.Second, "server failure counted", func() bool {
				return srv.Stats().TotalFailed() == 1
			})
			st := srv.Stats()
			if st.Failed(tt.wantServer) != 1 {
				t.Fatalf("server failures %v, want 1 x %v", st.HandshakesFailed, tt.wantServer)
			}
			if st.HandshakesOK != 0 || st.SessionsActive != 0 || st.HandshakesActive != 0 {
				t.Fatalf("server kept state after failure: %+v", st)
			}
			if cs := cli.Stats(); cs.TotalFailed() != 1 || cs.SessionsActive != 0 {
				t.Fatalf("client stats %+v", cs)
			}
			if _, ok := srv.PeerIdentity(cli.LocalAddr()); ok {
				t.Fatal("identity reported for a failed handshake")
			}
			_ = srv.Close()
			<-done
		})
	}
}

// TestPSKReload checks that a replaced key table governs new handshakes.
func TestPSKReload(t *testing.T) {
	scfg := pskServerConfig(t)
	srv := startServer(t, scfg)
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	newCli := func(id, key string) *ClientConn {
		lim := fastLimits(t)
		lim.HandshakeTimeout = time.Second
		return startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: id, PSK: mustKey(t, key)}, Limits: lim})
	}
	if _, err := roundTrip(t, newCli("dev-3", "three"), srv.LocalAddr(), "x"); !errors.Is(err, ErrHandshake) {
		t.Fatalf("dev-3 before reload: %v, want handshake failure", err)
	}
	scfg.PSK.Replace(map[string]Secret{"dev-3": mustKey(t, "three")})
	if got, err := roundTrip(t, newCli("dev-3", "three"), srv.LocalAddr(), "x"); err != nil || got != "echo:x" {
		t.Fatalf("dev-3 after reload: %q, %v", got, err)
	}
	if _, err := roundTrip(t, newCli("dev-1", "hex:00112233445566778899aabbccddeeff"), srv.LocalAddr(), "x"); !errors.Is(err, ErrHandshake) {
		t.Fatalf("dev-1 after removal: %v, want handshake failure", err)
	}
}

// TestPlaintextToDTLSPort sends plaintext CoAP and stray records to the
// listener: they are dropped, counted, and the listener keeps serving.
func TestPlaintextToDTLSPort(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	raw, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	appData := []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4}
	for _, b := range [][]byte{coapGET, coapGET, {0}, appData} {
		if _, err := raw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 2*time.Second, "drops counted", func() bool {
		st := srv.Stats()
		return st.DroppedNotDTLS == 3 && st.DroppedUnknownPeer == 1
	})
	_ = raw.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := raw.Read(make([]byte, 100)); err == nil {
		t.Fatalf("listener answered plaintext with %d bytes", n)
	}
	cli := startClient(t, ClientConfig{
		Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")},
		Limits:      fastLimits(t),
	})
	if got, err := roundTrip(t, cli, srv.LocalAddr(), "still up"); err != nil || got != "echo:still up" {
		t.Fatalf("after plaintext: %q, %v", got, err)
	}
	if st := srv.Stats(); st.HandshakesActive != 0 || st.SessionsActive != 1 {
		t.Fatalf("plaintext created state: %+v", st)
	}
}

// TestAlertFromUnknownPeerIsQuiet sends a closing peer's alert (the
// close_notify a device answers the end of a session with, which arrives
// once the session is gone) to a client and a listener: it is dropped
// without a warning and not counted as a record of a session this end
// forgot, while an application-data record from that address still is.
func TestAlertFromUnknownPeerIsQuiet(t *testing.T) {
	var logs testkit.SyncBuffer
	limits := fastLimits(t)
	limits.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	scfg := pskServerConfig(t)
	scfg.Limits = limits
	srv := startServer(t, scfg)
	cli := startClient(t, ClientConfig{
		Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")},
		Limits:      limits,
	})
	closeNotify := []byte{21, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 2, 1, 0}
	appData := []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 2, 0, 4, 1, 2, 3, 4}
	for _, end := range []struct {
		name  string
		addr  net.Addr
		stats func() Stats
	}{{"server", srv.LocalAddr(), srv.Stats}, {"client", cli.LocalAddr(), cli.Stats}} {
		raw, err := net.DialUDP("udp", nil, end.addr.(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		for _, b := range [][]byte{closeNotify, closeNotify, appData} {
			if _, err := raw.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		testkit.Eventually(t, 2*time.Second, end.name+": application data counted", func() bool {
			return end.stats().DroppedUnknownPeer >= 1
		})
		if st := end.stats(); st.DroppedUnknownPeer != 1 || st.DroppedNotDTLS != 0 {
			t.Errorf("%s: dropped unknown peer %d, not dtls %d; want 1 (the application data) and 0",
				end.name, st.DroppedUnknownPeer, st.DroppedNotDTLS)
		}
	}
	if n := strings.Count(logs.String(), "dtls dropped alert from peer without session"); n != 4 {
		t.Errorf("%d alerts logged, want 4 (at debug):\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "level=WARN msg=\"dtls dropped alert") {
		t.Errorf("an alert from a closed session was warned about:\n%s", logs.String())
	}
}

// TestGarbageClientHello sends ClientHellos with broken extensions: refused
// before any session state, counted, no reply.
func TestGarbageClientHello(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	raw, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	bad := [][]byte{
		buildHello(helloParts{exts: extBlock([]byte{0xab, 0xcd, 0xff, 0xff, 1, 2})}),
		buildHello(helloParts{exts: extBlock(ext(0x000a, []byte{0x00, 0x09, 0x00}))}),
		buildHello(helloParts{exts: extBlock(extEMS, extEMS)}),
		buildHello(helloParts{exts: append(extBlock(extEMS), 0xff, 0xff)}),
	}
	for _, b := range bad {
		if _, err := raw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 2*time.Second, "malformed hellos counted", func() bool {
		return srv.Stats().RefusedMalformed == uint64(len(bad))
	})
	_ = raw.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if n, err := raw.Read(make([]byte, 100)); err == nil {
		t.Fatalf("listener answered a malformed hello with %d bytes", n)
	}
	if st := srv.Stats(); st.HandshakesActive != 0 || st.SessionsActive != 0 {
		t.Fatalf("malformed hello created state: %+v", st)
	}
	// A well-formed hello from the same socket is answered with a
	// HelloVerifyRequest (RFC 6347 §4.2.1), not a ServerHello.
	if _, err := raw.Write(buildHello(helloParts{exts: extBlock(extEMS, extCurves)})); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	n, err := raw.Read(buf)
	if err != nil {
		t.Fatalf("no answer to a valid hello: %v", err)
	}
	if n < recordHeaderLen+1 || buf[0] != 22 || buf[recordHeaderLen] != 3 { // 3 = hello_verify_request
		t.Fatalf("answer is not a HelloVerifyRequest: %x", buf[:n])
	}
	if n >= len(buildHello(helloParts{exts: extBlock(extEMS, extCurves)}))*3 {
		t.Fatalf("HelloVerifyRequest of %d bytes amplifies", n)
	}
}

// TestCookieTimeout: a client that never returns the cookie (a spoofed
// source) holds its handshake slot only for CookieTimeout.
func TestCookieTimeout(t *testing.T) {
	scfg := pskServerConfig(t)
	scfg.CookieTimeout = 200 * time.Millisecond
	scfg.HandshakeTimeout = 10 * time.Second
	srv := startServer(t, scfg)
	raw, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write(buildHello(helloParts{exts: extBlock(extEMS, extCurves)})); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, time.Second, "handshake started", func() bool { return srv.Stats().HandshakesActive == 1 })
	testkit.Eventually(t, 2*time.Second, "handshake slot released", func() bool {
		st := srv.Stats()
		return st.HandshakesActive == 0 && st.Failed(FailTimeout) == 1
	})
}

// dropAfter passes the first n writes of a PacketConn and silently drops
// the rest, like a peer that vanishes mid-handshake.
type dropAfter struct {
	net.PacketConn
	mu sync.Mutex
	n  int
}

func (d *dropAfter) WriteTo(p []byte, addr net.Addr) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n <= 0 {
		return len(p), nil
	}
	d.n--
	return d.PacketConn.WriteTo(p, addr)
}

// TestHandshakeTimeout: a client that returns the cookie and then goes
// silent is cut off at HandshakeTimeout and counted as a timeout.
func TestHandshakeTimeout(t *testing.T) {
	scfg := pskServerConfig(t)
	scfg.HandshakeTimeout = 500 * time.Millisecond
	srv := startServer(t, scfg)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := fastLimits(t)
	lim.HandshakeTimeout = 800 * time.Millisecond
	cli, err := NewClientConnOn(&dropAfter{PacketConn: pc, n: 2}, ClientConfig{ // two ClientHellos
		Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")},
		Limits:      lim,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	start := time.Now()
	_, err = cli.WriteTo([]byte("x"), srv.LocalAddr())
	var he *HandshakeError
	if !errors.As(err, &he) || he.Reason != FailTimeout {
		t.Fatalf("client: %v, want timeout handshake error", err)
	}
	testkit.Eventually(t, 2*time.Second, "server timeout counted", func() bool { return srv.Stats().Failed(FailTimeout) == 1 })
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("timeout took %v", el)
	}
	if st := srv.Stats(); st.HandshakesActive != 0 || st.TotalFailed() != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRetryBackoff: after a failed handshake the client answers writes to
// that server with the same failure for RetryBackoff instead of starting a
// handshake per retransmission.
func TestRetryBackoff(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	cli := startClient(t, ClientConfig{
		Credentials:  Credentials{PSKIdentity: "intruder", PSK: mustKey(t, "k")},
		RetryBackoff: 300 * time.Millisecond,
		Limits:       fastLimits(t),
	})
	_, err1 := cli.WriteTo([]byte("1"), srv.LocalAddr())
	if !errors.Is(err1, ErrHandshake) {
		t.Fatalf("first write: %v", err1)
	}
	start := time.Now()
	_, err2 := cli.WriteTo([]byte("2"), srv.LocalAddr())
	if !errors.Is(err2, ErrHandshake) || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("second write: %v after %v, want the cached failure at once", err2, time.Since(start))
	}
	if cs := cli.Stats(); cs.BackoffRefusals != 1 || cs.TotalFailed() != 1 {
		t.Fatalf("client stats %+v", cs)
	}
	time.Sleep(350 * time.Millisecond)
	if _, err := cli.WriteTo([]byte("3"), srv.LocalAddr()); !errors.Is(err, ErrHandshake) {
		t.Fatalf("third write: %v", err)
	}
	testkit.Eventually(t, 2*time.Second, "second real attempt", func() bool { return srv.Stats().Failed(FailUnknownIdentity) == 2 })
	if cs := cli.Stats(); cs.TotalFailed() != 2 {
		t.Fatalf("client attempts %d, want 2", cs.TotalFailed())
	}
}

// TestHandshakeWithOtherCredentialsAfterAFailure: a failed handshake is
// remembered for RetryBackoff with the credentials it failed with; other
// credentials for the same server are tried at once, and a session made
// with one set is not served for another.
func TestHandshakeWithOtherCredentialsAfterAFailure(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	cli := startClient(t, ClientConfig{
		CredentialsFor: func(net.Addr) (Credentials, error) { return Credentials{}, errors.New("unused") },
		RetryBackoff:   5 * time.Second,
		Limits:         fastLimits(t),
	})
	creds := func(id, key string) func() (Credentials, error) {
		return func() (Credentials, error) { return Credentials{PSKIdentity: id, PSK: mustKey(t, key)}, nil }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cli.HandshakeWith(ctx, srv.LocalAddr(), "intruder", creds("intruder", "k")); !errors.Is(err, ErrHandshake) {
		t.Fatalf("unknown identity: %v", err)
	}
	if err := cli.HandshakeWith(ctx, srv.LocalAddr(), "dev-2", creds("dev-2", "secretkey")); err != nil {
		t.Fatalf("right credentials right after a failure of others: %v", err)
	}
	if err := cli.HandshakeWith(ctx, srv.LocalAddr(), "dev-2", creds("dev-2", "secretkey")); err != nil {
		t.Fatal(err)
	}
	// The client's count (the server's may follow its last flight a
	// moment after the client is done).
	if n := cli.Stats().HandshakesOK; n != 1 {
		t.Fatalf("%d handshakes, want 1: the session is reused for the same credentials", n)
	}
	if err := cli.HandshakeWith(ctx, srv.LocalAddr(), "dev-2 wrong", creds("dev-2", "wrongkey")); !errors.Is(err, ErrHandshake) {
		t.Fatalf("a wrong key rode the session of the right one: %v", err)
	}
	if err := cli.HandshakeWith(ctx, srv.LocalAddr(), "intruder", creds("intruder", "k")); !errors.Is(err, ErrHandshake) || srv.Stats().Failed(FailUnknownIdentity) != 1 {
		t.Fatalf("remembered failure: %v, server saw %d attempts, want 1", err, srv.Stats().Failed(FailUnknownIdentity))
	}
}
