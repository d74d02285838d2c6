package dtls

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger writes to the test log at Info when -v is set.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return discardLogger()
	}
	return slog.New(slog.NewTextHandler(testkit.LogWriter{TB: t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// fastLimits are short timeouts for tests.
func fastLimits(t testing.TB) Limits {
	return Limits{
		HandshakeTimeout: 3 * time.Second,
		FlightInterval:   100 * time.Millisecond,
		Logger:           testLogger(t),
	}
}

func mustKey(t testing.TB, s string) Secret {
	t.Helper()
	k, err := keys.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// startServer listens on 127.0.0.1:0 and closes the server at cleanup.
func startServer(t testing.TB, cfg ServerConfig) *ServerConn {
	t.Helper()
	srv, err := Listen("udp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func startClient(t testing.TB, cfg ClientConfig) *ClientConn {
	t.Helper()
	c, err := NewClientConn("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// echo serves srv until it is closed, writing every datagram back
// prefixed with "echo:".
func echo(t testing.TB, srv net.PacketConn) <-chan struct{} {
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
	return done
}

// roundTrip writes msg to addr and waits for one reply.
func roundTrip(t testing.TB, c net.PacketConn, addr net.Addr, msg string) (string, error) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := c.WriteTo([]byte(msg), addr); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
