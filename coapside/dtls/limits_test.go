package dtls

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// TestHandshakeFlood opens 200 sockets that each send a ClientHello and
// never continue. The handshake limit holds, the excess evicts the oldest
// handshakes still waiting for their cookie (counted), every slot is
// released by the cookie timeout, and a real client still gets through
// afterwards.
func TestHandshakeFlood(t *testing.T) {
	const sockets = 200
	scfg := pskServerConfig(t)
	scfg.MaxHandshakes = 50
	scfg.MaxSessions = 100
	scfg.CookieTimeout = time.Second // long enough that no slot frees while the flood is sent
	srv := startServer(t, scfg)
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()

	hello := buildHello(helloParts{exts: extBlock(extEMS, extCurves)})
	conns := make([]*net.UDPConn, 0, sockets)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var peak int64
	for range sockets {
		c, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		peak = max(peak, srv.Stats().HandshakesActive)
	}
	testkit.Eventually(t, 2*time.Second, "all hellos handled", func() bool {
		st := srv.Stats()
		peak = max(peak, st.HandshakesActive)
		return st.HandshakesEvicted+uint64(st.HandshakesActive)+st.TotalFailed() >= sockets
	})
	if peak > int64(scfg.MaxHandshakes) {
		t.Fatalf("peak handshakes %d > limit %d", peak, scfg.MaxHandshakes)
	}
	if st := srv.Stats(); st.HandshakesEvicted < sockets-uint64(scfg.MaxHandshakes) || st.RefusedLimit != 0 {
		t.Fatalf("evicted %d, want at least %d; refused %d", st.HandshakesEvicted, sockets-scfg.MaxHandshakes, st.RefusedLimit)
	}
	testkit.Eventually(t, 5*time.Second, "slots released", func() bool {
		st := srv.Stats()
		return st.HandshakesActive == 0 && st.SessionsActive == 0
	})
	cli := startClient(t, ClientConfig{
		Credentials: Credentials{PSKIdentity: "dev-1", PSK: mustKey(t, "hex:00112233445566778899aabbccddeeff")},
		Limits:      fastLimits(t),
	})
	if got, err := roundTrip(t, cli, srv.LocalAddr(), "after flood"); err != nil || got != "echo:after flood" {
		t.Fatalf("after flood: %q, %v", got, err)
	}
}

// TestSessionLimit: with MaxSessions established, a further client is
// refused and counted; the established ones keep working.
func TestSessionLimit(t *testing.T) {
	scfg := pskServerConfig(t)
	scfg.MaxSessions = 2
	srv := startServer(t, scfg)
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	mk := func() *ClientConn {
		lim := fastLimits(t)
		lim.HandshakeTimeout = 700 * time.Millisecond
		return startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")}, Limits: lim})
	}
	a, b, c := mk(), mk(), mk()
	for _, cli := range []*ClientConn{a, b} {
		if _, err := roundTrip(t, cli, srv.LocalAddr(), "in"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.WriteTo([]byte("over"), srv.LocalAddr()); !errors.Is(err, ErrHandshake) {
		t.Fatalf("third client: %v, want handshake failure", err)
	}
	if st := srv.Stats(); st.RefusedLimit == 0 || st.SessionsActive != 2 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := roundTrip(t, a, srv.LocalAddr(), "still"); err != nil {
		t.Fatal(err)
	}
}

// TestIdleExpiry: sessions idle past IdleTimeout are closed on both ends,
// counted, and the client handshakes again on its next write.
func TestIdleExpiry(t *testing.T) {
	scfg := pskServerConfig(t)
	scfg.IdleTimeout = 300 * time.Millisecond
	srv := startServer(t, scfg)
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	lim := fastLimits(t)
	lim.IdleTimeout = time.Hour
	cli := startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")}, Limits: lim})
	if _, err := roundTrip(t, cli, srv.LocalAddr(), "a"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, "server session expired", func() bool {
		st := srv.Stats()
		return st.SessionsExpired == 1 && st.SessionsActive == 0
	})
	// The server's close_notify ends the client's session too.
	testkit.Eventually(t, 2*time.Second, "client saw close_notify", func() bool { return cli.Stats().SessionsActive == 0 })
	if got, err := roundTrip(t, cli, srv.LocalAddr(), "b"); err != nil || got != "echo:b" {
		t.Fatalf("after expiry: %q, %v", got, err)
	}
	if cs := cli.Stats(); cs.HandshakesOK != 2 {
		t.Fatalf("client handshakes %d, want 2", cs.HandshakesOK)
	}
}

// TestClientIdleExpiry: the client expires a session whose server went
// quiet, counted in its own stats.
func TestClientIdleExpiry(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	lim := fastLimits(t)
	lim.IdleTimeout = 200 * time.Millisecond
	cli := startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")}, Limits: lim})
	if _, err := roundTrip(t, cli, srv.LocalAddr(), "a"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, "client session expired", func() bool {
		cs := cli.Stats()
		return cs.SessionsExpired == 1 && cs.SessionsActive == 0
	})
}

// TestConcurrentWritersShareHandshake: many goroutines writing to a new
// peer at once cause one handshake.
func TestConcurrentWritersShareHandshake(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	cli := startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")}, Limits: fastLimits(t)})
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := cli.WriteTo([]byte("x"), srv.LocalAddr())
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	_ = cli.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	for i := range n {
		if _, _, err := cli.ReadFrom(buf); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
	if cs, ss := cli.Stats(), srv.Stats(); cs.HandshakesOK != 1 || ss.HandshakesOK != 1 {
		t.Fatalf("handshakes client=%d server=%d, want 1", cs.HandshakesOK, ss.HandshakesOK)
	}
}

// TestPeerRestartSamePort: a client that loses its state and handshakes
// again from the same port replaces its old session (RFC 6347 §4.2.8).
func TestPeerRestartSamePort(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	cred := Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")}
	first, err := NewClientConn("127.0.0.1:0", ClientConfig{Credentials: cred, Limits: fastLimits(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(t, first, srv.LocalAddr(), "1"); err != nil {
		t.Fatal(err)
	}
	local := first.LocalAddr().String()
	// Drop the socket without close_notify, as a rebooting device would.
	_ = first.ep.pc.Close()
	_ = first.Close()
	second, err := NewClientConn(local, ClientConfig{Credentials: cred, Limits: fastLimits(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if got, err := roundTrip(t, second, srv.LocalAddr(), "2"); err != nil || got != "echo:2" {
		t.Fatalf("after restart: %q, %v", got, err)
	}
	testkit.Eventually(t, 2*time.Second, "old session gone", func() bool { return srv.Stats().SessionsActive == 1 })
	if st := srv.Stats(); st.SessionsReplaced != 1 || st.HandshakesOK != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSpoofedHelloKeepsSession: a ClientHello from the address of an
// established session (as an off-path attacker could forge) starts a
// handshake beside the session; when it is not completed the session
// stays.
func TestSpoofedHelloKeepsSession(t *testing.T) {
	scfg := pskServerConfig(t)
	scfg.CookieTimeout = 200 * time.Millisecond
	srv := startServer(t, scfg)
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	cli := startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")}, Limits: fastLimits(t)})
	if _, err := roundTrip(t, cli, srv.LocalAddr(), "a"); err != nil {
		t.Fatal(err)
	}
	// The forged hello leaves from the client's own socket, so it carries
	// the session's address.
	if _, err := cli.ep.pc.WriteTo(buildHello(helloParts{exts: extBlock(extEMS, extCurves)}), srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, "side handshake started and abandoned", func() bool {
		return srv.Stats().Failed(FailTimeout) == 1 && srv.Stats().HandshakesActive == 0
	})
	if got, err := roundTrip(t, cli, srv.LocalAddr(), "b"); err != nil || got != "echo:b" {
		t.Fatalf("session after forged hello: %q, %v", got, err)
	}
	if st := srv.Stats(); st.SessionsReplaced != 0 || st.HandshakesOK != 1 || st.SessionsActive != 1 {
		t.Fatalf("stats %+v", st)
	}
	if id, ok := srv.PeerIdentity(cli.LocalAddr()); !ok || id != "dev-2" {
		t.Fatalf("identity %q %v", id, ok)
	}
}

// TestCloseReleasesEverything closes a server with live sessions and
// handshakes; goleak in TestMain checks the goroutines.
func TestCloseReleasesEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	srv, err := Listen("udp", "127.0.0.1:0", pskServerConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	done := echo(t, srv)
	cli, err := NewClientConn("127.0.0.1:0", ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")}, Limits: fastLimits(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(t, cli, srv.LocalAddr(), "x"); err != nil {
		t.Fatal(err)
	}
	raw, _ := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	_, _ = raw.Write(buildHello(helloParts{exts: extBlock(extEMS, extCurves)}))
	testkit.Eventually(t, time.Second, "pending handshake", func() bool { return srv.Stats().HandshakesActive == 1 })
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	testkit.Eventually(t, 2*time.Second, "client saw close_notify", func() bool { return cli.Stats().SessionsActive == 0 })
	_ = cli.Close()
	_ = raw.Close()
	testkit.Eventually(t, 2*time.Second, "goroutines back", func() bool { return runtime.NumGoroutine() <= before })
}

// TestClientRedialsRestartedServer: a server restarted on the same port
// ignores the old session's records; after DeadAfter without an answer the
// client handshakes again on its next write.
func TestClientRedialsRestartedServer(t *testing.T) {
	scfg := pskServerConfig(t)
	srv1 := startServer(t, scfg)
	done1 := echo(t, srv1)
	addr := srv1.LocalAddr().String()
	cli := startClient(t, ClientConfig{
		Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")},
		DeadAfter:   300 * time.Millisecond,
		Limits:      fastLimits(t),
	})
	if _, err := roundTrip(t, cli, srv1.LocalAddr(), "a"); err != nil {
		t.Fatal(err)
	}
	// Restart without close_notify: the socket goes first.
	_ = srv1.ep.pc.Close()
	_ = srv1.Close()
	<-done1
	srv2, err := Listen("udp", addr, scfg)
	if err != nil {
		t.Fatal(err)
	}
	done2 := echo(t, srv2)
	defer func() { _ = srv2.Close(); <-done2 }()

	if _, err := cli.WriteTo([]byte("lost"), srv2.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, "stray record dropped by new server", func() bool {
		return srv2.Stats().DroppedUnknownPeer >= 1
	})
	time.Sleep(400 * time.Millisecond) // past DeadAfter with no answer
	if got, err := roundTrip(t, cli, srv2.LocalAddr(), "b"); err != nil || got != "echo:b" {
		t.Fatalf("after restart: %q, %v", got, err)
	}
	if cs := cli.Stats(); cs.SessionsDead != 1 || cs.HandshakesOK != 2 {
		t.Fatalf("client stats %+v", cs)
	}
}

// TestHandshakesPerSource: one source address (any port) holds at most
// MaxHandshakesPerSource handshakes in progress; its further ClientHellos
// take the slots of its own handshakes still waiting for their cookie
// (counted as evicted), never another source's, though the total limit is
// far from reached.
func TestHandshakesPerSource(t *testing.T) {
	scfg := pskServerConfig(t)
	scfg.MaxHandshakes = 8
	scfg.MaxHandshakesPerSource = 2
	scfg.CookieTimeout = 5 * time.Second // no slot frees by itself during the test
	srv := startServer(t, scfg)
	hello := buildHello(helloParts{exts: extBlock(extEMS, extCurves)})
	other, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2: %v", err)
	}
	defer other.Close()
	if _, err := other.Write(hello); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, "other source's handshake", func() bool { return srv.Stats().HandshakesActive == 1 })
	const flood = 5
	for range flood {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, srv.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 2*time.Second, "flood handled", func() bool {
		st := srv.Stats()
		return st.HandshakesEvicted+uint64(st.HandshakesActive) >= flood+1
	})
	st := srv.Stats()
	if st.HandshakesActive != 3 || st.HandshakesEvicted != flood-2 || st.RefusedLimit != 0 {
		t.Errorf("active %d (want 3: two of the flooding source, one other), evicted %d (want %d), refused %d",
			st.HandshakesActive, st.HandshakesEvicted, flood-2, st.RefusedLimit)
	}
}
