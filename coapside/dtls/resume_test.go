package dtls

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v2/pkg/protocol/handshake"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// wireCount is a PacketConn that counts what passes through it, and the
// plaintext handshake messages it sends, by type.
type wireCount struct {
	net.PacketConn
	mu                sync.Mutex
	sentDgrams, sentB int
	recvDgrams, recvB int
	sentTypes         map[handshake.Type]int
	// hsDgrams and hsBytes count datagrams both ways that start with a
	// handshake or ChangeCipherSpec record (not alerts or data).
	hsDgrams, hsBytes int
}

func (w *wireCount) noteHandshakeLocked(p []byte) {
	if len(p) > 0 && (p[0] == 22 || p[0] == 20) {
		w.hsDgrams++
		w.hsBytes += len(p)
	}
}

func newWireCount(pc net.PacketConn) *wireCount {
	return &wireCount{PacketConn: pc, sentTypes: map[handshake.Type]int{}}
}

func (w *wireCount) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := w.PacketConn.ReadFrom(p)
	if err == nil {
		w.mu.Lock()
		w.recvDgrams++
		w.recvB += n
		w.noteHandshakeLocked(p[:n])
		w.mu.Unlock()
	}
	return n, addr, err
}

func (w *wireCount) WriteTo(p []byte, addr net.Addr) (int, error) {
	w.mu.Lock()
	w.sentDgrams++
	w.sentB += len(p)
	w.noteHandshakeLocked(p)
	for b := p; len(b) >= recordHeaderLen; {
		n := recordHeaderLen + int(binary.BigEndian.Uint16(b[11:13]))
		if n > len(b) {
			break
		}
		// A plaintext (epoch 0) handshake record: its message type.
		if b[0] == 22 && b[3] == 0 && b[4] == 0 && n > recordHeaderLen {
			w.sentTypes[handshake.Type(b[recordHeaderLen])]++
		}
		b = b[n:]
	}
	w.mu.Unlock()
	return w.PacketConn.WriteTo(p, addr)
}

// wire is a snapshot of the counts.
type wire struct {
	dgrams, bytes     int
	hsDgrams, hsBytes int
	types             map[handshake.Type]int
}

// take returns the counts so far and starts again from zero.
func (w *wireCount) take() wire {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := wire{dgrams: w.sentDgrams + w.recvDgrams, bytes: w.sentB + w.recvB,
		hsDgrams: w.hsDgrams, hsBytes: w.hsBytes, types: w.sentTypes}
	w.sentDgrams, w.sentB, w.recvDgrams, w.recvB, w.hsDgrams, w.hsBytes = 0, 0, 0, 0, 0, 0
	w.sentTypes = map[handshake.Type]int{}
	return out
}

// startCountedServer serves cfg on a counted loopback socket.
func startCountedServer(t testing.TB, cfg ServerConfig) (*ServerConn, *wireCount) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := newWireCount(pc)
	srv, err := NewServerConn(w, cfg)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, w
}

// endSession ends the client's session with addr and waits until the
// server has seen it go.
func endSession(t testing.TB, srv *ServerConn, cli *ClientConn, addr net.Addr) {
	t.Helper()
	active := srv.Stats().SessionsActive
	cli.CloseSession(addr)
	testkit.Eventually(t, 5*time.Second, "server sees close_notify", func() bool {
		return srv.Stats().SessionsActive < active
	})
}

// rehandshake ends the client's session with addr and handshakes again
// once the server has seen the old session go; it returns when both ends
// are done with the handshake.
func rehandshake(t testing.TB, srv *ServerConn, cli *ClientConn, addr net.Addr) error {
	t.Helper()
	endSession(t, srv, cli, addr)
	return handshakeBoth(t, srv, cli, addr)
}

// handshakeBoth handshakes and waits for the server to finish too (in an
// abbreviated handshake the client finishes first).
func handshakeBoth(t testing.TB, srv *ServerConn, cli *ClientConn, addr net.Addr) error {
	t.Helper()
	ok, failed := srv.Stats().HandshakesOK, srv.Stats().TotalFailed()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := cli.Handshake(ctx, addr)
	testkit.Eventually(t, 5*time.Second, "server handshake done", func() bool {
		s := srv.Stats()
		return s.HandshakesOK > ok || s.TotalFailed() > failed
	})
	return err
}

// TestResumePSK: a client that handshakes again with a server resumes its
// session: the server sends no HelloVerifyRequest, ServerKeyExchange or
// ServerHelloDone, both ends count a resumed handshake, and the server
// still reports the PSK identity the full handshake authenticated.
func TestResumePSK(t *testing.T) {
	srv, w := startCountedServer(t, pskServerConfig(t))
	cli := startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")},
		Limits: fastLimits(t)})
	if err := handshakeBoth(t, srv, cli, srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	full := w.take()
	if full.types[handshake.TypeServerHelloDone] != 1 || full.types[handshake.TypeHelloVerifyRequest] != 1 {
		t.Fatalf("full handshake sent %v, want a HelloVerifyRequest and a ServerHelloDone", full.types)
	}
	endSession(t, srv, cli, srv.LocalAddr())
	w.take() // the close_notify
	if err := handshakeBoth(t, srv, cli, srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	resumed := w.take()
	t.Logf("full: %d datagrams %d bytes; resumed: %d datagrams %d bytes (both ways)",
		full.dgrams, full.bytes, resumed.dgrams, resumed.bytes)
	for _, ty := range []handshake.Type{handshake.TypeHelloVerifyRequest, handshake.TypeServerKeyExchange,
		handshake.TypeCertificate, handshake.TypeServerHelloDone} {
		if resumed.types[ty] != 0 {
			t.Errorf("resumed handshake sent %v", ty)
		}
	}
	if resumed.types[handshake.TypeServerHello] != 1 {
		t.Errorf("resumed handshake sent %v, want one ServerHello", resumed.types)
	}
	if s := srv.Stats(); s.HandshakesOK != 2 || s.HandshakesResumed != 1 {
		t.Errorf("server: %d handshakes, %d resumed; want 2, 1", s.HandshakesOK, s.HandshakesResumed)
	}
	if s := cli.Stats(); s.HandshakesOK != 2 || s.HandshakesResumed != 1 {
		t.Errorf("client: %d handshakes, %d resumed; want 2, 1", s.HandshakesOK, s.HandshakesResumed)
	}
	if id, ok := srv.PeerIdentity(cli.LocalAddr()); !ok || id != "dev-2" {
		t.Errorf("identity after resumption %q %v, want dev-2", id, ok)
	}
}

// TestResumeCertificate: a client that trusts the server's certificate
// resumes; the server sends no Certificate the second time, and the
// client still reports the server certificate's name.
func TestResumeCertificate(t *testing.T) {
	ca := testkit.NewCA(t, "resume CA")
	sc := ca.Issue(t, testkit.Leaf{CN: "bridge", Usage: x509.ExtKeyUsageServerAuth})
	srv, w := startCountedServer(t, ServerConfig{Certificate: &sc, Limits: fastLimits(t)})
	cli := startClient(t, ClientConfig{Credentials: Credentials{RootCAs: ca.Pool}, Limits: fastLimits(t)})
	if err := handshakeBoth(t, srv, cli, srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if full := w.take(); full.types[handshake.TypeCertificate] != 1 {
		t.Fatalf("full handshake sent %v, want the certificate", full.types)
	}
	if err := rehandshake(t, srv, cli, srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if resumed := w.take(); resumed.types[handshake.TypeCertificate] != 0 || resumed.types[handshake.TypeServerKeyExchange] != 0 {
		t.Errorf("resumed handshake sent %v", resumed.types)
	}
	if s := cli.Stats(); s.HandshakesResumed != 1 {
		t.Errorf("client resumed %d handshakes, want 1", s.HandshakesResumed)
	}
	if id, ok := cli.PeerIdentity(srv.LocalAddr()); !ok || id != "bridge" {
		t.Errorf("server identity after resumption %q %v, want bridge", id, ok)
	}
}

// TestResumeClientTrustChanged: a client whose trust anchors for a server
// changed does not offer the session it made under the old ones; the same
// anchors in a pool built again still resume.
func TestResumeClientTrustChanged(t *testing.T) {
	ca, other := testkit.NewCA(t, "resume CA"), testkit.NewCA(t, "other CA")
	sc := ca.Issue(t, testkit.Leaf{CN: "bridge", Usage: x509.ExtKeyUsageServerAuth})
	srv := startServer(t, ServerConfig{Certificate: &sc, Limits: fastLimits(t)})
	var roots atomic.Pointer[x509.CertPool]
	roots.Store(ca.Pool)
	cli := startClient(t, ClientConfig{
		CredentialsFor: func(net.Addr) (Credentials, error) { return Credentials{RootCAs: roots.Load()}, nil },
		Limits:         fastLimits(t),
	})
	if err := handshakeBoth(t, srv, cli, srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	same := x509.NewCertPool()
	same.AddCert(ca.Cert)
	roots.Store(same)
	if err := rehandshake(t, srv, cli, srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if s := cli.Stats(); s.HandshakesResumed != 1 {
		t.Fatalf("same anchors: resumed %d, want 1", s.HandshakesResumed)
	}
	changed := x509.NewCertPool()
	changed.AddCert(ca.Cert)
	changed.AddCert(other.Cert)
	roots.Store(changed)
	if err := rehandshake(t, srv, cli, srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if s := cli.Stats(); s.HandshakesResumed != 1 || s.ResumeInvalid != 1 || s.HandshakesOK != 3 {
		t.Errorf("changed anchors: %d handshakes, %d resumed, %d refused; want 3, 1, 1",
			s.HandshakesOK, s.HandshakesResumed, s.ResumeInvalid)
	}
}

// TestResumeRefusedAfterPSKChange: once the server's PSK table no longer
// holds an identity (or holds another key for it), a session its full
// handshake made is not resumed: the client's offer falls back to a full
// handshake, which the key decides.
func TestResumeRefusedAfterPSKChange(t *testing.T) {
	for _, tc := range []struct {
		name  string
		table map[string]Secret
		want  FailReason
	}{
		{"removed", map[string]Secret{"dev-1": mustKey(t, "other")}, FailUnknownIdentity},
		{"changed", map[string]Secret{"dev-2": mustKey(t, "newkey")}, FailBadPSK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := pskServerConfig(t)
			srv := startServer(t, cfg)
			cli := startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")},
				Limits: fastLimits(t), RetryBackoff: -1})
			if err := handshakeBoth(t, srv, cli, srv.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			cfg.PSK.Replace(tc.table)
			err := rehandshake(t, srv, cli, srv.LocalAddr())
			var he *HandshakeError
			if !errors.As(err, &he) {
				t.Fatalf("handshake after the key went: %v, want a failure", err)
			}
			s := srv.Stats()
			if s.HandshakesResumed != 0 || s.ResumeInvalid != 1 {
				t.Errorf("resumed %d, refused offers %d; want 0, 1", s.HandshakesResumed, s.ResumeInvalid)
			}
			testkit.Eventually(t, 5*time.Second, "failure counted", func() bool { return srv.Stats().Failed(tc.want) == 1 })
		})
	}
}

// TestResumeFromNewAddress: a client whose NAT binding changed resumes
// from its new address; the server moves it there, with its identity, and
// ends the session at the old address.
func TestResumeFromNewAddress(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	done := echo(t, srv)
	defer func() { _ = srv.Close(); <-done }()
	nat := peer.StartNAT(t, srv.LocalAddr().(*net.UDPAddr), 0)
	cli := startClient(t, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")},
		Limits: fastLimits(t)})
	if got, err := roundTrip(t, cli, nat.Addr(), "one"); err != nil || got != "echo:one" {
		t.Fatalf("through the NAT: %q %v", got, err)
	}
	before := nat.External(cli.LocalAddr().(*net.UDPAddr))
	after, err := nat.Rebind(cli.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	// Records of the old session from the new binding are dropped: the
	// server has no session there.
	if _, err := cli.WriteTo([]byte("lost"), nat.Addr()); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "record from the new binding dropped", func() bool {
		return srv.Stats().DroppedUnknownPeer == 1
	})
	cli.CloseSession(nat.Addr()) // what DeadAfter does when the device notices
	if got, err := roundTrip(t, cli, nat.Addr(), "two"); err != nil || got != "echo:two" {
		t.Fatalf("after the rebinding: %q %v", got, err)
	}
	s := srv.Stats()
	if s.HandshakesResumed != 1 || s.SessionsMoved != 1 {
		t.Errorf("resumed %d, moved %d; want 1, 1", s.HandshakesResumed, s.SessionsMoved)
	}
	if id, ok := srv.PeerIdentity(after); !ok || id != "dev-2" {
		t.Errorf("identity at the new binding %q %v, want dev-2", id, ok)
	}
	testkit.Eventually(t, 5*time.Second, "old binding's session ended", func() bool {
		_, ok := srv.PeerIdentity(before)
		return !ok && srv.Stats().SessionsActive == 1
	})
}

// TestResumeCacheBounds: the cache evicts the least recently used entry at
// its bound and forgets an entry after its lifetime.
func TestResumeCacheBounds(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newResumeCache(2, time.Hour, func() time.Time { return now })
	c.put(resumeEntry{key: "a"})
	c.put(resumeEntry{key: "b"})
	if _, ok := c.get("a"); !ok { // a is now the most recently used
		t.Fatal("a missing")
	}
	c.put(resumeEntry{key: "c"})
	if _, ok := c.get("b"); ok {
		t.Error("b, the least recently used, was kept")
	}
	if c.len() != 2 {
		t.Errorf("len %d, want 2", c.len())
	}
	now = now.Add(time.Hour)
	if _, ok := c.get("a"); ok {
		t.Error("a outlived its lifetime")
	}
	if newResumeCache(-1, time.Hour, time.Now) != nil {
		t.Error("a negative bound must disable the cache")
	}
}

// TestFlightHold: a ServerHello is held until its flight's ServerHelloDone
// (full handshake) or ChangeCipherSpec (abbreviated), then the flight is
// delivered as one datagram; anything else passes at once.
func TestFlightHold(t *testing.T) {
	rec := func(ct byte, epoch uint16, body ...byte) []byte {
		b := []byte{ct, 0xfe, 0xfd, byte(epoch >> 8), byte(epoch), 0, 0, 0, 0, 0, 1, 0, byte(len(body))}
		return append(b, body...)
	}
	hello := rec(22, 0, byte(handshake.TypeServerHello), 1, 2)
	ske := rec(22, 0, byte(handshake.TypeServerKeyExchange), 3)
	done := rec(22, 0, byte(handshake.TypeServerHelloDone))
	ccs := rec(20, 0, 1)
	hvr := rec(22, 0, byte(handshake.TypeHelloVerifyRequest), 9)
	var h flightHold
	if out := h.push(hvr); len(out) != 1 {
		t.Fatalf("HelloVerifyRequest held: %v", out)
	}
	if out := h.push(hello); out != nil {
		t.Fatalf("ServerHello alone delivered: %v", out)
	}
	if out := h.push(ske); out != nil {
		t.Fatalf("ServerKeyExchange delivered before the flight ends: %v", out)
	}
	out := h.push(done)
	want := string(hello) + string(ske) + string(done)
	if len(out) != 1 || string(out[0]) != want {
		t.Fatalf("full flight delivered as %q, want one datagram %q", out, want)
	}
	if out := h.push(append(append([]byte(nil), hello...), done...)); len(out) != 1 {
		t.Fatalf("a whole flight in one datagram held: %v", out)
	}
	h.push(hello)
	if out := h.push(ccs); len(out) != 1 || string(out[0]) != string(hello)+string(ccs) {
		t.Fatalf("abbreviated flight delivered as %q", out)
	}
}

// gatedConn is a client socket that, once armed, drops the alerts it
// sends and holds the first ClientHello carrying a cookie until release
// is closed.
type gatedConn struct {
	net.PacketConn
	armed   atomic.Bool
	release chan struct{}
	held    chan struct{} // closed when a ClientHello with a cookie waits
	once    sync.Once
}

func (g *gatedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if g.armed.Load() {
		if len(p) > 0 && p[0] == 21 {
			return len(p), nil // the server never hears close_notify
		}
		if hasCookie(p) {
			g.once.Do(func() { close(g.held) })
			<-g.release
		}
	}
	return g.PacketConn.WriteTo(p, addr)
}

// TestSessionEndHandsAddressToHandshake: a handshake started beside an
// established session from the same address (a peer that lost or closed
// its session and handshook again at once) takes the address when the
// old session ends before it completes, so that its later records (the
// ClientHello returning the cookie) still find it.
func TestSessionEndHandsAddressToHandshake(t *testing.T) {
	srv := startServer(t, pskServerConfig(t))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedConn{PacketConn: pc, release: make(chan struct{}), held: make(chan struct{})}
	lim := fastLimits(t)
	lim.ResumeSessions = -1 // a full handshake, with the cookie exchange
	cli, err := NewClientConnOn(g, ClientConfig{Credentials: Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")},
		Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	if err := handshakeBoth(t, srv, cli, srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	g.armed.Store(true)
	cli.CloseSession(srv.LocalAddr()) // unheard: the server keeps its session
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- cli.Handshake(ctx, srv.LocalAddr())
	}()
	<-g.held // the new handshake runs beside the old session on the server
	if !srv.CloseSession(cli.LocalAddr()) {
		t.Fatal("the server had no session to close")
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatalf("handshake beside a session that ended: %v", err)
	}
	if s := srv.Stats(); s.RefusedCookie != 0 {
		t.Errorf("the returned cookie was refused %d times", s.RefusedCookie)
	}
}

// TestResumeAcrossClientConns: a client that closes its socket and opens a
// new one on the same port with the same ClientSessionCache (a device
// waking from sleep) resumes its session; without the shared cache it runs
// a full handshake.
func TestResumeAcrossClientConns(t *testing.T) {
	srv, _ := startCountedServer(t, pskServerConfig(t))
	cache := NewClientSessionCache(4, 0)
	cred := Credentials{PSKIdentity: "dev-2", PSK: mustKey(t, "secretkey")}
	open := func(addr string, shared *ClientSessionCache) *ClientConn {
		t.Helper()
		c, err := NewClientConn(addr, ClientConfig{Credentials: cred, SessionCache: shared, Limits: fastLimits(t)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	wake := func(addr string, shared *ClientSessionCache) (resumed uint64, local string) {
		t.Helper()
		c := open(addr, shared)
		if err := handshakeBoth(t, srv, c, srv.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		resumed, local = c.Stats().HandshakesResumed, c.LocalAddr().String()
		active := srv.Stats().SessionsActive
		_ = c.Close() // close_notify: the server ends the session
		testkit.Eventually(t, 5*time.Second, "server sees the session end", func() bool {
			return srv.Stats().SessionsActive < active
		})
		return resumed, local
	}
	first, addr := wake("127.0.0.1:0", cache)
	if first != 0 || cache.Len() != 1 {
		t.Fatalf("first wake: resumed %d, cache %d; want 0, 1", first, cache.Len())
	}
	for i := range 3 {
		if r, _ := wake(addr, cache); r != 1 {
			t.Fatalf("wake %d with the shared cache: resumed %d, want 1", i+2, r)
		}
	}
	if r, _ := wake(addr, nil); r != 0 {
		t.Fatalf("wake without the shared cache resumed")
	}
	if s := srv.Stats(); s.HandshakesOK != 5 || s.HandshakesResumed != 3 {
		t.Errorf("server: %d handshakes, %d resumed; want 5, 3", s.HandshakesOK, s.HandshakesResumed)
	}
}
