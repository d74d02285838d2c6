package coapside

import (
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// BenchmarkServerPiggybackedGET measures one CON GET /ping round trip through
// the server over loopback UDP (client side: a bare socket, no allocations).
func BenchmarkServerPiggybackedGET(b *testing.B) {
	mux := NewServeMux()
	pong := []byte("pong")
	mux.HandleFunc("GET /ping", func(w ResponseWriter, r *Request) {
		w.SetContentFormat(message.TextPlain)
		_, _ = w.Write(pong)
	})
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: mux}
	done := make(chan error, 1)
	go func() { done <- s.Serve(conn) }()
	defer func() {
		_ = s.Close()
		<-done
	}()
	c, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := message.Message{Type: message.Confirmable, Code: message.GET, Token: []byte{1, 2, 3, 4}}
	req.Options = req.Options.SetPath("/ping")
	wire, err := req.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 256)
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	b.ReportAllocs()
	mid := uint16(0)
	for b.Loop() {
		mid++
		wire[2], wire[3] = byte(mid>>8), byte(mid)
		if _, err := c.Write(wire); err != nil {
			b.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil {
			b.Fatal(err)
		}
		if n < 4 || buf[1] != byte(message.Content) {
			b.Fatalf("reply % x", buf[:n])
		}
	}
}
