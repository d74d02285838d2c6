package mqttside

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// checkLeaks fails the test if goroutines started by it are still running
// at the end. Register it first so it runs after the other cleanups.
func checkLeaks(t *testing.T) {
	t.Helper()
	opts := []goleak.Option{goleak.IgnoreCurrent()}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// collector is a Handler that records deliveries and can hold back acks.
type collector struct {
	mu     sync.Mutex
	got    []*Delivery
	noAck  func(*Delivery) bool
	notify chan struct{}
}

func newCollector() *collector { return &collector{notify: make(chan struct{}, 1)} }

func (c *collector) ServeMQTT(d *Delivery) {
	if c.noAck == nil || !c.noAck(d) {
		d.Ack() // before recording, so a test that saw it knows it was acked
	}
	c.mu.Lock()
	c.got = append(c.got, d)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *collector) deliveries() []*Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Delivery(nil), c.got...)
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *collector) payloads() []string {
	var out []string
	for _, d := range c.deliveries() {
		out = append(out, string(d.Payload))
	}
	return out
}

// rawClient connects a plain Paho client, for the other side of a test.
func rawClient(tb testing.TB, broker, id string, clean bool, setup func(*paho.ClientOptions)) paho.Client {
	tb.Helper()
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(clean).
		SetConnectRetryInterval(50 * time.Millisecond).SetMaxReconnectInterval(100 * time.Millisecond).
		SetConnectTimeout(2 * time.Second)
	if setup != nil {
		setup(o)
	}
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		tb.Fatalf("raw client %s connect: %v", id, tok.Error())
	}
	tb.Cleanup(func() { c.Disconnect(100) })
	return c
}

func waitTok(tb testing.TB, tok paho.Token) {
	tb.Helper()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		tb.Fatalf("token: %v", tok.Error())
	}
}

func ctxT(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// testCA writes a CA certificate and a server certificate for localhost
// and 127.0.0.1 with its key into dir and returns the paths.
func testCA(tb testing.TB, dir string) (caFile, certFile, keyFile string) {
	ca, cert, key, _, _ := testPKI(tb, dir)
	return ca, cert, key
}

// testPKI is testCA plus a client certificate signed by the same CA.
func testPKI(tb testing.TB, dir string) (caFile, certFile, keyFile, clientCert, clientKey string) {
	tb.Helper()
	ca := testkit.NewCA(tb, "bridge test CA")
	certFile, keyFile = testkit.WritePair(tb, dir, "server", ca.Issue(tb, testkit.Leaf{CN: "localhost",
		Usage: x509.ExtKeyUsageServerAuth, DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}}))
	clientCert, clientKey = testkit.WritePair(tb, dir, "client", ca.Issue(tb, testkit.Leaf{CN: "bridge",
		Usage: x509.ExtKeyUsageClientAuth}))
	return ca.WriteCert(tb, dir, "ca.pem"), certFile, keyFile, clientCert, clientKey
}

// proxy is a TCP relay whose connections a test can cut, to simulate a
// network failure without the broker losing its sessions.
type proxy struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	conns   []net.Conn
	closed  bool
	wg      sync.WaitGroup
}

func newProxy(tb testing.TB, backend string) *proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return newProxyOn(tb, ln, backend)
}

// newProxyOn relays connections accepted on ln, e.g. a TLS listener that
// terminates TLS in front of a plain backend.
func newProxyOn(tb testing.TB, ln net.Listener, backend string) *proxy {
	tb.Helper()
	p := &proxy{ln: ln, backend: backend}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

func (p *proxy) URL() string { return "tcp://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.backend)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			b.Close()
			return
		}
		p.conns = append(p.conns, c, b)
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, b)
		go p.pipe(b, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// Cut closes every relayed connection; new ones are still accepted.
func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}
