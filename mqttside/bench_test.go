package mqttside

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	mqtt "github.com/mochi-mqtt/server/v2"
	mqttpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/coap-mqtt/bridge/e2e/peer"
)

// BenchmarkPublish compares the publish path of the remote client (Paho to
// a mosquitto started by the benchmark, over loopback TCP) with the
// embedded broker's inline client, at QoS 0 and 1 with 64 B and 1 KiB
// payloads. No subscribers are attached: this measures what the bridge
// pays per publish until the broker has the message.
//
//   - seq: one publisher, each Publish waits for its result; ns/op is the
//     publish latency.
//   - par: 32 concurrent publishers; msgs/s is the throughput.
//
// Run: go test -run '^$' -bench BenchmarkPublish -benchmem ./mqttside
func BenchmarkPublish(b *testing.B) {
	m := peer.StartMosquitto(b, 0, "allow_anonymous true\nmax_queued_messages 100000\n")
	remote, err := NewRemote(RemoteOptions{Broker: m.URL(), ClientID: "bench", StatusTopic: "-", BufferSize: 100000})
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Start(ctxT(b, 5*time.Second)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = remote.Close(ctxT(b, 5*time.Second)) })
	embedded, err := NewEmbedded(EmbeddedOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := embedded.Start(ctxT(b, 5*time.Second)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = embedded.Close(context.Background()) })

	for _, c := range []struct {
		name string
		cl   Client
	}{{"remote", remote}, {"embedded", embedded}} {
		for _, qos := range []byte{0, 1} {
			for _, size := range []int{64, 1024} {
				msg := Message{Topic: "bench/" + c.name, Payload: make([]byte, size), QoS: qos}
				name := fmt.Sprintf("%s/qos%d/%dB", c.name, qos, size)
				b.Run(name+"/seq", func(b *testing.B) {
					ctx := context.Background()
					b.SetBytes(int64(size))
					b.ReportAllocs()
					for b.Loop() {
						if err := c.cl.Publish(ctx, msg); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
				})
				b.Run(name+"/par", func(b *testing.B) {
					ctx := context.Background()
					b.SetBytes(int64(size))
					b.ReportAllocs()
					b.SetParallelism(16)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := c.cl.Publish(ctx, msg); err != nil {
								b.Error(err)
								return
							}
						}
					})
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
				})
			}
		}
	}
}

// BenchmarkRoundTrip measures end-to-end latency: publish, then wait until
// the same client's subscription receives the message back from the
// broker (remote: through mosquitto and back over TCP; embedded: through
// mochi's topic index to the inline handler).
//
// Run: go test -run '^$' -bench BenchmarkRoundTrip -benchmem ./mqttside
func BenchmarkRoundTrip(b *testing.B) {
	m := peer.StartMosquitto(b, 0, "allow_anonymous true\n")
	remote, err := NewRemote(RemoteOptions{Broker: m.URL(), ClientID: "bench-rt", StatusTopic: "-"})
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Start(ctxT(b, 5*time.Second)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = remote.Close(ctxT(b, 5*time.Second)) })
	embedded, err := NewEmbedded(EmbeddedOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := embedded.Start(ctxT(b, 5*time.Second)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = embedded.Close(context.Background()) })

	for _, c := range []struct {
		name string
		cl   Client
	}{{"remote", remote}, {"embedded", embedded}} {
		for _, qos := range []byte{0, 1} {
			for _, size := range []int{64, 1024} {
				topic := fmt.Sprintf("rt/%s/%d/%d", c.name, qos, size)
				got := make(chan struct{}, 1)
				h := HandlerFunc(func(d *Delivery) {
					d.Ack()
					got <- struct{}{}
				})
				if err := c.cl.Subscribe(ctxT(b, 5*time.Second), topic, qos, h); err != nil {
					b.Fatal(err)
				}
				msg := Message{Topic: topic, Payload: make([]byte, size), QoS: qos}
				b.Run(fmt.Sprintf("%s/qos%d/%dB", c.name, qos, size), func(b *testing.B) {
					ctx := context.Background()
					b.SetBytes(int64(size))
					b.ReportAllocs()
					for b.Loop() {
						if err := c.cl.Publish(ctx, msg); err != nil {
							b.Fatal(err)
						}
						<-got
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
				})
			}
		}
	}
}

// BenchmarkEmbeddedPublishToSubscriber measures the embedded broker's
// delivery from the bridge's inline publish to an MQTT subscriber on its
// TCP listener, at QoS 0 and 1, with and without the publisher yielding to
// the broker's write goroutines (see yieldToWriters). The publishers are
// two goroutines taking turns, 16 messages each, as the bridge's CoAP
// readers do: the goroutine that reads next is woken by the one that read
// last. At most 512 messages wait to be written. ns/op is the time per
// message; p50-µs and p99-µs the time from Publish to mochi's write of the
// message to the subscriber's socket. The subscriber is one goroutine
// reading the socket (and acknowledging at QoS 1); it only has to keep up
// eventually, so its own speed does not enter the latency. Messages mochi
// dropped are reported as "dropped" (and end that run).
//
// Run with one and two CPUs for the scheduler (the write goroutine waits
// for a CPU only with one):
//
//	go test -run '^$' -bench EmbeddedPublishToSubscriber -cpu 1,2 ./mqttside
func BenchmarkEmbeddedPublishToSubscriber(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		for _, yield := range []bool{false, true} {
			b.Run(fmt.Sprintf("qos%d/yield=%t", qos, yield), func(b *testing.B) {
				benchDelivery(b, qos, yield)
			})
		}
	}
}

// sentHook reports every publish mochi writes to a network client.
type sentHook struct {
	mqtt.HookBase
	fn func(mqttpackets.Packet)
}

func (h *sentHook) ID() string { return "bench-sent" }

func (h *sentHook) Provides(b byte) bool { return b == mqtt.OnPacketSent }

func (h *sentHook) OnPacketSent(_ *mqtt.Client, pk mqttpackets.Packet, _ []byte) {
	if pk.FixedHeader.Type == mqttpackets.Publish && !pk.FixedHeader.Dup {
		h.fn(pk)
	}
}

func benchDelivery(b *testing.B, qos byte, yield bool) {
	old := yieldAfter
	if !yield {
		yieldAfter = 0
	}
	b.Cleanup(func() { yieldAfter = old })

	const window, turn = 512, 16
	var (
		mu   sync.Mutex
		lats = make([]time.Duration, 0, b.N)
		room = make(chan struct{}, window)
	)
	e, err := NewEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	hook := &sentHook{fn: func(pk mqttpackets.Packet) {
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(pk.Payload)))
		mu.Lock()
		lats = append(lats, time.Since(sent))
		mu.Unlock()
		select { // never block mochi's writer, whatever it writes twice
		case <-room:
		default:
		}
	}}
	if err := e.srv.AddHook(hook, nil); err != nil {
		b.Fatal(err)
	}
	if err := e.Start(ctxT(b, 5*time.Second)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close(context.Background()) })
	received := benchSubscriber(b, e.Addr(), qos)

	ctx := context.Background()
	var next atomic.Int64
	var stuck atomic.Bool
	publish := func() bool {
		for range turn {
			if next.Add(1) > int64(b.N) {
				return false
			}
			select {
			case room <- struct{}{}:
			case <-time.After(10 * time.Second):
				// A message the broker dropped is never written.
				stuck.Store(true)
				return false
			}
			p := make([]byte, 64)
			binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
			if err := e.Publish(ctx, Message{Topic: "bench/dev", Payload: p, QoS: qos}); err != nil {
				b.Error(err)
				return false
			}
		}
		return true
	}
	// Two publishers hand the turn to each other.
	ping, pong := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	player := func(mine, theirs chan struct{}) {
		defer wg.Done()
		defer close(theirs)
		for range mine {
			if !publish() {
				return
			}
			theirs <- struct{}{}
		}
	}
	b.ResetTimer()
	wg.Add(2)
	go player(ping, pong)
	go player(pong, ping)
	ping <- struct{}{}
	wg.Wait()
	dropped := atomic.LoadInt64(&e.srv.Info.InflightDropped) + atomic.LoadInt64(&e.srv.Info.MessagesDropped)
	if stuck.Load() || dropped > 0 {
		// At QoS 1 on one CPU without the yield, mochi's read goroutine
		// for the subscriber is starved too: its acknowledgements are not
		// read, 8192 messages are unacknowledged (Capabilities.
		// MaximumInflight) and mochi drops the next ones.
		b.ReportMetric(float64(dropped), "dropped")
		b.Logf("mochi dropped %d messages (in flight limit or full queue)", dropped)
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for !b.Failed() && received.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("subscriber received %d of %d messages", received.Load(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	if b.Failed() {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lats)
	b.ReportMetric(float64(lats[len(lats)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds()), "p99-µs")
}

// benchSubscriber connects a minimal MQTT 3.1.1 subscriber to addr: one
// goroutine reading through a buffer and acknowledging QoS 1 messages. It
// returns the count of messages received; the connection closes with b.
func benchSubscriber(b *testing.B, addr string, qos byte) *atomic.Int64 {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion, cp.ClientIdentifier, cp.CleanSession, cp.Keepalive = "MQTT", 4, "bench-sub", true, 60
	sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sp.MessageID, sp.Topics, sp.Qoss = 1, []string{"bench/#"}, []byte{qos}
	for _, p := range []packets.ControlPacket{cp, sp} {
		if err := p.Write(conn); err != nil {
			b.Fatal(err)
		}
		if _, err := packets.ReadPacket(r); err != nil { // CONNACK, SUBACK
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			p, err := packets.ReadPacket(r)
			if err != nil {
				return
			}
			pub, ok := p.(*packets.PublishPacket)
			if !ok {
				continue
			}
			if pub.Qos == 1 {
				ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
				ack.MessageID = pub.MessageID
				if err := ack.Write(conn); err != nil {
					return
				}
			}
			n.Add(1)
		}
	}()
	b.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return &n
}
