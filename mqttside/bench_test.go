package mqttside

import (
	"context"
	"fmt"
	"testing"
	"time"

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
