package coapside

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/observe"
)

// benchObserverSockets is how many client sockets carry the observers in
// the server benchmark; each holds observers/benchObserverSockets tokens.
const benchObserverSockets = 100

// rawObservers is a set of bare UDP sockets holding many registrations: a
// reader per socket ACKs CON notifications and counts 2.05 responses.
type rawObservers struct {
	conns    []*net.UDPConn
	received atomic.Int64
	wg       sync.WaitGroup
}

func newRawObservers(b *testing.B, n int) *rawObservers {
	b.Helper()
	r := &rawObservers{}
	for range n {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		_ = c.SetReadBuffer(4 << 20)
		r.conns = append(r.conns, c)
		r.wg.Add(1)
		go r.read(c)
	}
	return r
}

func (r *rawObservers) read(c *net.UDPConn) {
	defer r.wg.Done()
	buf := make([]byte, 2048)
	ack := make([]byte, 4)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if n < 4 {
			continue
		}
		typ := message.Type(buf[0] >> 4 & 3)
		if typ == message.Confirmable {
			ack[0], ack[1], ack[2], ack[3] = 0x60, 0, buf[2], buf[3] // ACK, empty, same MID
			_, _ = c.WriteToUDPAddrPort(ack, from)
		}
		if message.Code(buf[1]) == message.Content {
			r.received.Add(1)
		}
	}
}

func (r *rawObservers) close() {
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.wg.Wait()
}

// register sends GET Observe=0 for path from socket i with a token derived
// from id.
func (r *rawObservers) register(b *testing.B, i int, to *net.UDPAddr, path string, id int) {
	tok := make([]byte, 4)
	binary.BigEndian.PutUint32(tok, uint32(id))
	m := &message.Message{Type: message.NonConfirmable, Code: message.GET, MessageID: uint16(id), Token: tok}
	m.Options = m.Options.SetPath(path).SetUint(message.Observe, observe.Register)
	data, err := m.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.conns[i].WriteToUDP(data, to); err != nil {
		b.Fatal(err)
	}
}

// waitReceived waits until at least want responses arrived or d passed.
func (r *rawObservers) waitReceived(want int64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for r.received.Load() < want {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Microsecond)
	}
	return true
}

// cpuTime returns the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssBytes returns the resident set size from /proc, or 0.
func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkObserveServer notifies 10,000 observers (from 100 client sockets
// on 127.0.0.1) on one resource and spread over 1,000 resources. One
// iteration is one change of every resource, i.e. 10,000 notifications.
// Reported: notifications/s, heap bytes per observer (registry, routing,
// dedup state of the registration requests), CPU µs per notification (the
// process total, including the in-process client sockets).
func BenchmarkObserveServer(b *testing.B) {
	for _, resources := range []int{1, 1000} {
		b.Run(fmt.Sprintf("observers=10000/resources=%d", resources), func(b *testing.B) {
			benchObserveServer(b, 10000, resources)
		})
	}
}

func benchObserveServer(b *testing.B, observers, resources int) {
	obs, err := NewObserveServer(ObserveOptions{MaxAge: 60})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- obs.Run(ctx) }()
	value := []byte("21.5")
	mux := NewServeMux()
	mux.Handle("GET /r/{i}", obs.Observable(HandlerFunc(func(w ResponseWriter, _ *Request) {
		w.SetContentFormat(message.TextPlain)
		_, _ = w.Write(value)
	})))
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	_ = conn.(*net.UDPConn).SetWriteBuffer(4 << 20)
	_ = conn.(*net.UDPConn).SetReadBuffer(4 << 20)
	srv := &Server{Handler: mux, Options: ServerOptions{MaxConcurrent: 4096}}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(conn) }()
	defer func() {
		_ = srv.Close()
		<-serveDone
		cancel()
		<-runDone
	}()
	to := conn.LocalAddr().(*net.UDPAddr)
	clients := newRawObservers(b, benchObserverSockets)
	defer clients.close()

	before := heapInUse()
	for id := range observers {
		clients.register(b, id%benchObserverSockets, to, "/r/"+strconv.Itoa(id%resources), id)
		if id%200 == 199 { // pace registrations so no socket buffer overflows
			clients.waitReceived(int64(id+1), 2*time.Second)
		}
	}
	if !clients.waitReceived(int64(observers), 5*time.Second) {
		b.Fatalf("only %d of %d registrations answered", clients.received.Load(), observers)
	}
	for deadline := time.Now().Add(2 * time.Second); obs.Stats().Observers < observers && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := obs.Stats().Observers; n != observers {
		b.Fatalf("%d observers registered, want %d", n, observers)
	}
	perObserver := float64(heapInUse()-before) / float64(observers)
	clients.received.Store(0)
	st := observe.State{Payload: value, ContentFormat: uint16(message.TextPlain), MaxAge: 60}

	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	lost := int64(0)
	for i := range b.N {
		for r := range resources {
			obs.NotifyState("/r/"+strconv.Itoa(r), st)
		}
		want := int64(i+1)*int64(observers) - lost
		if !clients.waitReceived(want, 3*time.Second) {
			lost += want - clients.received.Load()
		}
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	got := clients.received.Load()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "notifications/s")
	b.ReportMetric(perObserver, "heapB/observer")
	if got > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(got), "cpu-µs/notification")
	}
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(float64(rssBytes())/(1<<20), "RSS-MiB")
	if s := obs.Stats(); s.SendErrors > 0 || s.Timeouts > 0 || lost > 0 {
		b.Logf("notifier stats %+v, downgraded %d, endpoint %+v", s, obs.Downgraded(), srv.Endpoints()[0].Stats().Snapshot())
	}
}
