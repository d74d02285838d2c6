package coapside

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fastOpts are transmission parameters scaled down for tests.
func fastOpts() EndpointOptions {
	return EndpointOptions{
		AckTimeout:      40 * time.Millisecond,
		AckRandomFactor: 1.0,
		MaxRetransmit:   2,
		SeparateAfter:   30 * time.Millisecond,
	}
}

// startServer serves h on 127.0.0.1:0 and stops it at cleanup.
func startServer(t *testing.T, h Handler, opts ServerOptions) (*Server, *net.UDPAddr) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startServerOn(t, conn, h, opts)
}

// startServerOn serves h on conn until the test ends.
func startServerOn(t *testing.T, conn net.PacketConn, h Handler, opts ServerOptions) (*Server, *net.UDPAddr) {
	t.Helper()
	s := &Server{Handler: h, Options: opts}
	done := make(chan error, 1)
	go func() { done <- s.Serve(conn) }()
	testkit.Eventually(t, time.Second, "server start", func() bool { return len(s.Endpoints()) == 1 })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})
	return s, conn.LocalAddr().(*net.UDPAddr)
}

// rawPeer is a bare UDP socket that speaks wire bytes to test reactions.
type rawPeer struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
}

func newRawPeer(t *testing.T, to *net.UDPAddr) *rawPeer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, conn: c, to: to}
}

func (p *rawPeer) addr() *net.UDPAddr { return p.conn.LocalAddr().(*net.UDPAddr) }

func (p *rawPeer) send(b []byte) {
	p.t.Helper()
	if _, err := p.conn.WriteToUDP(b, p.to); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) sendMsg(m *message.Message) {
	p.t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		p.t.Fatal(err)
	}
	p.send(b)
}

// recv waits up to d for a datagram; ok is false on timeout.
func (p *rawPeer) recv(d time.Duration) (*message.Message, *net.UDPAddr, bool) {
	p.t.Helper()
	buf := make([]byte, 2048)
	_ = p.conn.SetReadDeadline(time.Now().Add(d))
	n, from, err := p.conn.ReadFromUDP(buf)
	if err != nil {
		return nil, nil, false
	}
	m, err := message.Decode(buf[:n])
	if err != nil {
		p.t.Fatalf("peer received undecodable % x: %v", buf[:n], err)
	}
	return m, from, true
}

func (p *rawPeer) mustRecv(d time.Duration) *message.Message {
	p.t.Helper()
	m, _, ok := p.recv(d)
	if !ok {
		p.t.Fatal("no datagram received")
	}
	return m
}

func (p *rawPeer) expectSilence(d time.Duration) {
	p.t.Helper()
	if m, _, ok := p.recv(d); ok {
		p.t.Fatalf("unexpected datagram %v", m)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}
