package coapside

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/observe"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// ampServer serves every kind of answer the amplification bound must cover:
// a large GET body, a large answer to POST (not sliceable), a large error
// diagnostic, an observable resource and discovery.
type ampServer struct {
	srv     *Server
	addr    *net.UDPAddr
	obs     *ObserveServer
	counter *counterResource
	big     []byte
}

func startAmpServer(t *testing.T, opts ServerOptions) *ampServer {
	t.Helper()
	s := &ampServer{big: bigBody(4096), counter: &counterResource{value: bigBody(900)}}
	obs, stop := startNotifier(t)
	s.obs = obs
	mux := NewServeMux()
	mux.HandleResource("GET /obs", obs.Observable(s.counter), linkformat.Resource{ResourceTypes: []string{"counter"}, Observable: true})
	mux.HandleResource("GET /big", HandlerFunc(func(w ResponseWriter, _ *Request) { _, _ = w.Write(s.big) }),
		linkformat.Resource{ResourceTypes: []string{"big"}, Size: 4096})
	mux.HandleFunc("POST /big", func(w ResponseWriter, _ *Request) { _, _ = w.Write(s.big[:2000]) })
	mux.HandleFunc("GET /err", func(w ResponseWriter, _ *Request) {
		Error(w, fmt.Errorf("%w: %s", message.BadRequest, strings.Repeat("é", 500)))
	})
	s.srv, s.addr = startServer(t, mux, opts)
	t.Cleanup(stop)
	return s
}

// startNotifier runs an ObserveServer until the returned stop is called.
func startNotifier(t *testing.T) (*ObserveServer, func()) {
	t.Helper()
	obs, err := NewObserveServer(ObserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- obs.Run(ctx) }()
	return obs, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// datagrams returns the sizes of the datagrams p receives until none comes
// for quiet.
func (p *rawPeer) datagrams(quiet time.Duration) [][]byte {
	var out [][]byte
	buf := make([]byte, 65536)
	for {
		_ = p.conn.SetReadDeadline(time.Now().Add(quiet))
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return out
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

// ampCase is one request of the ratio survey.
type ampCase struct {
	name string
	req  *message.Message
	raw  []byte // sent as is instead of req
	then func() // run after sending, before collecting (notifications)
}

// worstRatio sends every case from its own socket, which never answers an
// Echo challenge, and returns the worst response/request byte ratio seen,
// logging each.
func worstRatio(t *testing.T, addr *net.UDPAddr, cases []ampCase) float64 {
	t.Helper()
	worst := 0.0
	for _, c := range cases {
		p := newRawPeer(t, addr)
		raw := c.raw
		if raw == nil {
			var err error
			if raw, err = c.req.MarshalBinary(); err != nil {
				t.Fatal(err)
			}
		}
		p.send(raw)
		if c.then != nil {
			c.then()
		}
		got := p.datagrams(300 * time.Millisecond)
		if len(got) == 0 {
			t.Logf("%-40s %4d B -> nothing", c.name, len(raw))
			continue
		}
		for _, d := range got {
			r := float64(len(d)) / float64(len(raw))
			worst = max(worst, r)
			code := "?"
			if h, err := message.ParseHeader(d); err == nil {
				code = h.Code.String()
			}
			t.Logf("%-40s %4d B -> %4d B %-22s %.2fx", c.name, len(raw), len(d), code, r)
		}
	}
	return worst
}

func get(mid uint16, tok []byte, path string, opts message.Options) *message.Message {
	return &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: mid, Token: tok, Options: opts.SetPath(path)}
}

func blockReq(t *testing.T, num uint32, szx uint8) message.Options {
	v, err := block.Option{Num: num, SZX: szx}.Value()
	if err != nil {
		t.Fatal(err)
	}
	return message.Options{}.SetUint(message.Block2, v)
}

// TestAmplificationBoundEveryAnswer surveys every kind of answer the server
// gives an unverified source (which never returns an Echo) and requires each
// datagram to be at most three times the request.
func TestAmplificationBoundEveryAnswer(t *testing.T) {
	s := startAmpServer(t, ServerOptions{EndpointOptions: serverTestOpts()})
	tok := []byte{1, 2}
	notify := func() {
		for i := 0; i < 5; i++ {
			s.counter.set(bigBody(900 + i))
			s.obs.Notify("/obs")
		}
	}
	short := []byte{0x40, byte(message.GET), 0x33, 0x33} // 4-byte GET of "/"
	cases := []ampCase{
		{name: "GET large body", req: get(1, tok, "/big", nil)},
		{name: "GET large body, no token", req: get(2, nil, "/big", nil)},
		{name: "GET Block2 0/SZX 6", req: get(3, tok, "/big", blockReq(t, 0, 6))},
		{name: "GET Block2 2/SZX 6", req: get(4, tok, "/big", blockReq(t, 2, 6))},
		{name: "GET Block2 beyond the end (4.02)", req: get(5, tok, "/big", blockReq(t, 100, 6))},
		{name: "NON GET large body", req: &message.Message{Type: message.NonConfirmable, Code: message.GET, MessageID: 6, Token: tok, Options: message.Options{}.SetPath("/big")}},
		{name: "POST with a large answer", req: &message.Message{Type: message.Confirmable, Code: message.POST, MessageID: 7, Token: tok, Options: message.Options{}.SetPath("/big")}},
		{name: "4.00 with a long diagnostic", req: get(8, tok, "/err", nil)},
		{name: "4.04", req: get(9, tok, "/nothing", nil)},
		{name: "4.02 unknown critical option", req: get(10, tok, "/big", message.Options{}.Set(9, []byte{1}))},
		{name: "discovery", req: get(11, tok, "/.well-known/core", nil)},
		{name: "discovery filtered", req: get(12, tok, "/.well-known/core", message.Options{}.AddString(message.URIQuery, "rt=big"))},
		{name: "Observe registration + notifications", req: get(13, tok, "/obs", message.Options{}.SetUint(message.Observe, observe.Register)), then: notify},
		{name: "4-byte GET /", raw: short},
	}
	worst := worstRatio(t, s.addr, cases)
	t.Logf("worst response/request ratio %.2f", worst)
	if worst > 3 {
		t.Errorf("worst response/request ratio %.2f, want at most 3", worst)
	}
	if n := s.obs.Observers("/obs"); n != 0 {
		t.Errorf("%d observers registered without a returned Echo", n)
	}
	st := s.srv.Stats()
	if st.EchoChallenges == 0 || st.AmplificationLimited == 0 {
		t.Errorf("Echo challenges %d, limited %d; want both counted", st.EchoChallenges, st.AmplificationLimited)
	}
}

// TestAmplificationShortDuplicate: a short datagram reusing the message ID
// of a longer request does not get the longer one's cached answer.
func TestAmplificationShortDuplicate(t *testing.T) {
	s := startAmpServer(t, ServerOptions{EndpointOptions: serverTestOpts()})
	p := newRawPeer(t, s.addr)
	long := get(40, []byte{1, 2, 3, 4, 5, 6, 7, 8}, "/big", message.Options{}.AddString(message.URIQuery, strings.Repeat("q", 200)))
	p.sendMsg(long)
	first := p.datagrams(300 * time.Millisecond)
	if len(first) != 1 {
		t.Fatalf("%d answers to the long request", len(first))
	}
	dup := []byte{0x40, byte(message.GET), 0, 40}
	p.send(dup)
	for _, d := range p.datagrams(300 * time.Millisecond) {
		if len(d) > 3*len(dup) {
			t.Errorf("4-byte duplicate answered with %d bytes", len(d))
		}
	}
}

// TestAmplificationEchoVerifiesSource: repeating the Echo value of a
// challenge proves the address; from then on the source gets full answers.
func TestAmplificationEchoVerifiesSource(t *testing.T) {
	s := startAmpServer(t, ServerOptions{EndpointOptions: serverTestOpts()})
	p := newRawPeer(t, s.addr)
	tok := []byte{7}
	// A registration is challenged, whatever the size of the answer.
	reg := get(1, tok, "/obs", message.Options{}.SetUint(message.Observe, observe.Register))
	p.sendMsg(reg)
	resp := p.mustRecv(2 * time.Second)
	echo, ok := echoChallenge(resp.Code, resp.Options)
	if !ok || len(echo) != echoLen {
		t.Fatalf("registration answered %v, want 4.01 + Echo", resp)
	}
	if n := s.obs.Observers("/obs"); n != 0 {
		t.Fatalf("observer registered before the Echo came back: %d", n)
	}
	// Another address cannot use the value.
	other := newRawPeer(t, s.addr)
	other.sendMsg(get(2, tok, "/obs", message.Options{}.SetUint(message.Observe, observe.Register).SetEcho(echo)))
	if r := other.mustRecv(2 * time.Second); r.Code != message.Unauthorized {
		t.Fatalf("Echo value accepted from another address: %v", r)
	}
	reg.MessageID, reg.Options = 3, reg.Options.SetEcho(echo)
	p.sendMsg(reg)
	resp = p.mustRecv(2 * time.Second)
	if _, ok := resp.Options.Observe(); !ok || resp.Code != message.Content || len(resp.Payload) != 900 {
		t.Fatalf("registration with Echo answered %v (%d bytes), want 2.05 + Observe with the whole value", resp, len(resp.Payload))
	}
	if n := s.obs.Observers("/obs"); n != 1 {
		t.Fatalf("observers %d after the Echo", n)
	}
	// Notifications go to the verified address, whole.
	s.counter.set(bigBody(901))
	s.obs.Notify("/obs")
	n := p.mustRecv(2 * time.Second)
	if len(n.Payload) != 901 {
		t.Errorf("notification of %d bytes, want the whole 901", len(n.Payload))
	}
	// And a plain GET of the large body gets the full block size.
	p.sendMsg(get(4, tok, "/big", nil))
	resp = p.mustRecv(2 * time.Second)
	b2, ok := respBlock(t, resp, message.Block2)
	if !ok || b2.Size() != 1024 {
		t.Errorf("verified GET answered Block2 %v (%v)", b2, ok)
	}
	st := s.srv.Stats()
	if st.EchoVerified != 1 || st.EchoRejected != 1 {
		t.Errorf("Echo verified %d rejected %d, want 1 and 1", st.EchoVerified, st.EchoRejected)
	}
	if v := s.srv.Endpoints()[0].VerifiedPeers(); v != 1 {
		t.Errorf("verified peers %d, want 1", v)
	}
}

// TestAmplificationSmallFirstBlock: an unverified GET of a large body gets
// a first block small enough for the bound, and fetching on with the
// block size the server chose reassembles the body, every answer bounded.
func TestAmplificationSmallFirstBlock(t *testing.T) {
	s := startAmpServer(t, ServerOptions{EndpointOptions: serverTestOpts()})
	p := newRawPeer(t, s.addr)
	tok := []byte{1, 2, 3, 4}
	var body []byte
	opts := blockReq(t, 0, 6)
	for mid := uint16(1); ; mid++ {
		req := get(mid, tok, "/big", opts)
		raw, _ := req.MarshalBinary()
		p.send(raw)
		buf := make([]byte, 2048)
		_ = p.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("block request %d: %v", mid, err)
		}
		if n > 3*len(raw) {
			t.Fatalf("block request %d: %d bytes answered with %d", mid, len(raw), n)
		}
		m, err := message.Decode(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		b2, ok := respBlock(t, m, message.Block2)
		if !ok || m.Code != message.Content {
			t.Fatalf("block request %d answered %v", mid, m)
		}
		body = append(body, m.Payload...)
		if !b2.More {
			break
		}
		opts = blockReq(t, b2.Num+1, b2.SZX)
	}
	if !bytes.Equal(body, s.big) {
		t.Fatalf("reassembled %d bytes, want the %d-byte body", len(body), len(s.big))
	}
}

// TestAmplificationClientAnswersEcho: the client repeats a request with the
// Echo of a 4.01 once, for a request (a POST with a large answer, which
// cannot go block-wise) and an Observe registration.
func TestAmplificationClientAnswersEcho(t *testing.T) {
	s := startAmpServer(t, ServerOptions{EndpointOptions: serverTestOpts()})
	c := newBlockClient(t, ClientBlockwiseOptions{})
	url := "coap://" + s.addr.String()
	resp, err := c.Post(testCtx(t), url+"/big", message.TextPlain, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != message.Changed || !bytes.Equal(resp.Payload, s.big[:2000]) {
		t.Fatalf("POST answered %v with %d bytes", resp.Code, len(resp.Payload))
	}
	if st := s.srv.Stats(); st.EchoChallenges != 1 || st.EchoVerified != 1 {
		t.Errorf("challenges %d, verified %d; want 1 and 1", st.EchoChallenges, st.EchoVerified)
	}

	// A GET of a large body: the first answer is a small block with an
	// Echo; the client asks again with it and gets 1024-byte blocks.
	before := s.srv.Stats().RequestsHandled
	resp, err = c.Get(testCtx(t), url+"/big")
	if err != nil || !bytes.Equal(resp.Payload, s.big) {
		t.Fatalf("GET /big: %v, %d bytes", err, len(resp.Payload))
	}
	if n := s.srv.Stats().RequestsHandled - before; n != 4 {
		t.Errorf("GET of 4096 bytes took %d requests, want 4 (the client was verified by the POST)", n)
	}
	c3 := newBlockClient(t, ClientBlockwiseOptions{})
	before = s.srv.Stats().RequestsHandled
	if resp, err = c3.Get(testCtx(t), url+"/big"); err != nil || !bytes.Equal(resp.Payload, s.big) {
		t.Fatalf("GET /big from a new client: %v", err)
	}
	if n := s.srv.Stats().RequestsHandled - before; n != 5 {
		t.Errorf("GET of 4096 bytes from a new client took %d requests, want 5 (small block with Echo, then 4 of 1024)", n)
	}

	c2 := newBlockClient(t, ClientBlockwiseOptions{})
	got := make(chan int, 8)
	o, err := c2.Observe(testCtx(t), url+"/obs", func(n Notification) { got <- len(n.Payload) })
	if err != nil {
		t.Fatal(err)
	}
	defer o.Cancel(testCtx(t)) //nolint:errcheck // the test is over
	if n := <-got; n != 900 {
		t.Fatalf("first notification %d bytes", n)
	}
	s.counter.set(bigBody(950))
	s.obs.Notify("/obs")
	select {
	case n := <-got:
		if n != 950 {
			t.Errorf("notification %d bytes, want 950", n)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no notification after the registration with Echo")
	}
}

// TestAmplificationDisabled and DTLS-like transports: no bound.
func TestAmplificationDisabled(t *testing.T) {
	s := startAmpServer(t, ServerOptions{EndpointOptions: serverTestOpts(), Amplification: AmplificationOptions{Disable: true}})
	p := newRawPeer(t, s.addr)
	p.sendMsg(get(1, []byte{1}, "/big", nil))
	if m := p.mustRecv(2 * time.Second); len(m.Payload) != 1024 {
		t.Errorf("disabled bound: first block %d bytes, want 1024", len(m.Payload))
	}
}

// verifiedConn is a transport whose peers proved their address, as DTLS's
// are.
type verifiedConn struct{ net.PacketConn }

func (verifiedConn) PeersVerified() bool { return true }

// TestAmplificationNotOnVerifiedTransport: on a conn implementing
// VerifiedTransport (the DTLS listener), answers are not bounded.
func TestAmplificationNotOnVerifiedTransport(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := NewServeMux()
	big := bigBody(4096)
	mux.HandleFunc("GET /big", func(w ResponseWriter, _ *Request) { _, _ = w.Write(big) })
	_, addr := startServerOn(t, verifiedConn{conn}, mux, ServerOptions{EndpointOptions: serverTestOpts()})
	p := newRawPeer(t, addr)
	p.sendMsg(get(1, []byte{1}, "/big", nil))
	if m := p.mustRecv(2 * time.Second); len(m.Payload) != 1024 {
		t.Errorf("verified transport: first block %d bytes, want 1024", len(m.Payload))
	}
}

func TestEchoValues(t *testing.T) {
	m := newEchoMinter(time.Minute)
	a := peerKey{ap: netip.MustParseAddrPort("192.0.2.1:5683")}
	b := peerKey{ap: netip.MustParseAddrPort("192.0.2.1:5684")}
	now := time.Unix(1_700_000_000, 0)
	v := m.mint(a, now)
	if len(v) != echoLen || !m.valid(v, a, now.Add(30*time.Second)) || !m.valid(v, a, now) {
		t.Fatal("fresh value for its own address refused")
	}
	if m.valid(v, b, now) {
		t.Error("value accepted from another port")
	}
	if m.valid(v, a, now.Add(61*time.Second)) {
		t.Error("expired value accepted")
	}
	bad := bytes.Clone(v)
	bad[len(bad)-1] ^= 1
	if m.valid(bad, a, now) || m.valid(v[:6], a, now) {
		t.Error("altered value accepted")
	}
	if newEchoMinter(time.Minute).valid(v, a, now) {
		t.Error("value accepted by another key")
	}
}

func TestVerifiedTableBounded(t *testing.T) {
	var st Stats
	tab := newVerifiedTable(2, time.Minute, &st)
	k := func(port uint16) peerKey {
		return peerKey{ap: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port)}
	}
	now := time.Unix(1_700_000_000, 0)
	tab.add(k(1), now)
	tab.add(k(2), now)
	if !tab.seen(k(1), now) { // k(2) is now the least recently seen
		t.Fatal("k1 not verified")
	}
	tab.add(k(3), now)
	if tab.seen(k(2), now) || !tab.seen(k(1), now) || !tab.seen(k(3), now) {
		t.Error("the least recently seen address was not the one forgotten")
	}
	if tab.len() != 2 || st.VerifiedEvictions.Load() != 1 {
		t.Errorf("len %d evictions %d", tab.len(), st.VerifiedEvictions.Load())
	}
	if tab.seen(k(1), now.Add(2*time.Minute)) {
		t.Error("address verified past its lifetime")
	}
	tab.sweep(now.Add(2 * time.Minute))
	if tab.len() != 0 {
		t.Errorf("%d entries after the sweep", tab.len())
	}
}

// TestAmplificationReregistrationAnswersEcho: when the server has forgotten
// the client's address by the time the client re-registers, the
// re-registration is challenged and the client repeats it with the Echo;
// the observation goes on.
func TestAmplificationReregistrationAnswersEcho(t *testing.T) {
	h := HandlerFunc(func(w ResponseWriter, _ *Request) {
		*w.Options() = w.Options().SetUint(message.MaxAge, 0)
		_, _ = w.Write([]byte("a"))
	})
	obs, stop := startNotifier(t)
	defer stop()
	mux := NewServeMux()
	mux.Handle("GET /obs", obs.Observable(h))
	srv, addr := startServer(t, mux, ServerOptions{EndpointOptions: serverTestOpts(),
		Amplification: AmplificationOptions{VerifiedLifetime: 20 * time.Millisecond}})
	c := newBlockClient(t, ClientBlockwiseOptions{})
	fn, ch := collect(64)
	req, _ := NewRequest(message.GET, fmt.Sprintf("coap://%s/obs", addr), nil)
	o, err := c.ObserveRequest(testCtx(t), req, fn, ObservationOptions{ReregisterMargin: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Wait()
	defer o.Cancel(testCtx(t)) //nolint:errcheck // the test is over
	nextNote(t, ch)
	testkit.Eventually(t, 5*time.Second, "two re-registrations verified by Echo", func() bool {
		return srv.Stats().EchoVerified >= 3
	})
	if err := o.Err(); err != nil {
		t.Fatalf("observation ended: %v", err)
	}
	obs.NotifyState("/obs", observe.State{Payload: []byte("b")})
	for deadline := time.Now().Add(3 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("notification after the challenged re-registrations never arrived")
		}
		if n := nextNote(t, ch); string(n.Payload) == "b" {
			break
		}
	}
}
