package coapside

import (
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// BenchmarkShedFlood measures what one datagram of a flood from a source
// over its rate limit costs a batching reader, from the recvmmsg call that
// reads it to the silent drop: datagrams are queued on a socket of their own
// (outside the timer) and read and served as the read loop does.
func BenchmarkShedFlood(b *testing.B) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: NotFoundHandler(), Options: ServerOptions{RateLimit: 0.001, RateBurst: 1}}
	served := make(chan error, 1)
	go func() { served <- s.Serve(conn) }()
	defer func() {
		_ = s.Close()
		<-served
	}()
	for len(s.Endpoints()) == 0 {
		time.Sleep(time.Millisecond)
	}
	e := s.Endpoints()[0]
	// The flood arrives on a socket no reader of e reads.
	in, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	_ = in.SetReadBuffer(1 << 22)
	src, err := net.DialUDP("udp", nil, in.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	req := message.Message{Type: message.NonConfirmable, Code: message.POST, Token: []byte{1, 2, 3, 4}, Payload: make([]byte, 64)}
	req.Options = req.Options.SetPath("/telemetry/flood/temp")
	wire, err := req.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	r := &reader{scratch: make([]byte, 0, 256), out: make([]byte, 0, 256)}
	r.batch = newReaderBatch(e, in, e.p.MaxMessageSize)
	if r.batch == nil {
		b.Skip("no batch reads on this socket")
	}
	const queued = 64
	b.ReportAllocs()
	b.ResetTimer()
	done := 0
	for done < b.N {
		b.StopTimer()
		for range queued {
			if _, err := src.Write(wire); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for got := 0; got < queued; {
			n, err := r.batch.rd.read(r.batch.lens, r.batch.from)
			if err != nil {
				b.Fatal(err)
			}
			e.serveBatch(r, n)
			got += n
		}
		done += queued
	}
	b.StopTimer()
	// The first datagram takes the source's only token.
	if got := e.Stats().RateLimited.Load(); got != uint64(done-1) {
		b.Fatalf("rate limited %d of %d", got, done)
	}
}
