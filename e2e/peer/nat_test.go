package peer

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// target is a bare UDP socket behind which a NAT's bindings are tested.
func natTarget(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readFrom reads one datagram within d; nil, nil when none came.
func readFrom(t *testing.T, c *net.UDPConn, d time.Duration) ([]byte, *net.UDPAddr) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDP(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n], from
}

// TestNATRewritesExpiresAndRebinds: the target sees a client at its
// binding, not its own port, and reaches it there; after Rebind only the
// new binding reaches it; an idle binding closes and the client is
// unreachable until it sends again.
func TestNATRewritesExpiresAndRebinds(t *testing.T) {
	target := natTarget(t)
	const idle = 2 * time.Second
	nat := StartNAT(t, target.LocalAddr().(*net.UDPAddr), idle)
	client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	self := client.LocalAddr().(*net.UDPAddr)

	send := func() *net.UDPAddr {
		t.Helper()
		if _, err := client.WriteToUDP([]byte("up"), nat.Addr()); err != nil {
			t.Fatal(err)
		}
		b, from := readFrom(t, target, 5*time.Second)
		if string(b) != "up" {
			t.Fatalf("target got %q", b)
		}
		return from
	}
	// reaches sends from the target to a binding; a datagram that gets
	// through arrives at once, one that does not is waited for briefly.
	reaches := func(to *net.UDPAddr, wait time.Duration) bool {
		t.Helper()
		if _, err := target.WriteToUDP([]byte("down"), to); err != nil {
			t.Fatal(err)
		}
		b, _ := readFrom(t, client, wait)
		return string(b) == "down"
	}
	const through, blocked = 5 * time.Second, 300 * time.Millisecond

	ext := send()
	if ext.Port == self.Port {
		t.Fatalf("the target sees the client's own port %d", ext.Port)
	}
	if got := nat.External(self); got == nil || got.String() != ext.String() {
		t.Fatalf("External = %v, target saw %v", got, ext)
	}
	if !reaches(ext, through) {
		t.Fatal("the target does not reach the client through its binding")
	}

	moved, err := nat.Rebind(self)
	if err != nil {
		t.Fatal(err)
	}
	if moved.Port == ext.Port {
		t.Fatalf("Rebind kept port %d", ext.Port)
	}
	if reaches(ext, blocked) {
		t.Fatal("the old binding still reaches the client after Rebind")
	}
	if from := send(); from.String() != moved.String() {
		t.Fatalf("after Rebind the client arrives from %v, want %v", from, moved)
	}
	if !reaches(moved, through) {
		t.Fatal("the new binding does not reach the client")
	}

	testkit.Eventually(t, 5*time.Second, "binding expired", func() bool { return nat.External(self) == nil })
	if nat.Expired() != 1 {
		t.Errorf("Expired = %d, want 1", nat.Expired())
	}
	if reaches(moved, blocked) {
		t.Fatal("an expired binding still reaches the client")
	}
	if again := send(); again.Port == moved.Port {
		t.Logf("the kernel gave the new binding the expired one's port %d", again.Port)
	}
}

func TestNATLoopbackOnly(t *testing.T) {
	if _, err := NewLossyProxy(LossyConfig{Target: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5683}}); err == nil {
		t.Error("a target off loopback was accepted")
	}
	if _, err := NewLossyProxy(LossyConfig{Target: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5683}, Listen: "0.0.0.0:0"}); err == nil {
		t.Error("a listen address off loopback was accepted")
	}
}
