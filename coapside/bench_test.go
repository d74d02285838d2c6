package coapside

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
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

// BenchmarkServerConcurrentCON measures CON PUT round trips from 32
// clients in flight at once, each on its own socket, to a handler that
// yields the CPU once (as one publishing to a broker does). Handlers run
// on the readers, so under such a load readers start and retire all the
// time; B/op shows what that costs.
func BenchmarkServerConcurrentCON(b *testing.B) {
	for _, idle := range []int{2, 8} {
		b.Run(fmt.Sprintf("idle=%d", idle), func(b *testing.B) { benchConcurrentCON(b, idle) })
	}
}

func benchConcurrentCON(b *testing.B, idleReaders int) {
	mux := NewServeMux()
	mux.HandleFunc("PUT /in", func(w ResponseWriter, r *Request) {
		runtime.Gosched()
		w.SetCode(message.Changed)
	})
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: mux, Options: ServerOptions{IdleReaders: idleReaders}}
	done := make(chan error, 1)
	go func() { done <- s.Serve(conn) }()
	defer func() {
		_ = s.Close()
		<-done
	}()
	const clients = 32
	socks := make([]*net.UDPConn, clients)
	for i := range socks {
		c, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		socks[i] = c
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i, c := range socks {
		wg.Go(func() {
			req := message.Message{Type: message.Confirmable, Code: message.PUT, Token: []byte{byte(i)}, Payload: []byte("21.5")}
			req.Options = req.Options.SetPath("/in")
			wire, err := req.MarshalBinary()
			if err != nil {
				errs <- err
				return
			}
			buf := make([]byte, 256)
			mid := uint16(i) << 10
			for next.Add(1) <= int64(b.N) {
				mid++
				wire[2], wire[3] = byte(mid>>8), byte(mid)
				if _, err := c.Write(wire); err != nil {
					errs <- err
					return
				}
				n, err := c.Read(buf)
				if err != nil {
					errs <- err
					return
				}
				if n < 4 || buf[1] != byte(message.Changed) {
					errs <- fmt.Errorf("reply % x", buf[:n])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
