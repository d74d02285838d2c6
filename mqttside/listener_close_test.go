package mqttside

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestEmbeddedCloseWhileClientsLeave: the embedded broker stops while
// its clients leave (their removal from the client table racing the
// shutdown's disconnection of the others) without hanging.
func TestEmbeddedCloseWhileClientsLeave(t *testing.T) {
	checkLeaks(t)
	const clients = 40
	for round := 0; round < 20; round++ {
		e, err := NewEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(ctxT(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		var conns []net.Conn
		for i := 0; i < clients; i++ {
			conns = append(conns, connectClient(t, e.Addr(), fmt.Sprintf("leaving-%d", i)))
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range conns {
				_ = c.Close()
				time.Sleep(100 * time.Microsecond)
			}
		}()
		closed := make(chan struct{})
		go func() {
			_ = e.Close(context.Background())
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: the broker's Close hung while clients left", round)
		}
		wg.Wait()
	}
}

// connectClient connects an MQTT client and reads its CONNACK.
func connectClient(t *testing.T, addr, id string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: id}}
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, make([]byte, 4)); err != nil {
		t.Fatalf("CONNACK: %v", err)
	}
	return conn
}
