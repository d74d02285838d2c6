package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/mqttside"
)

// resultPublisher takes commands' results and wakes the sender of each,
// found by the result's correlation data (one byte).
type resultPublisher struct {
	done [256]chan struct{}
}

func (p *resultPublisher) Publish(_ context.Context, m mqttside.Message) error {
	p.done[m.CorrelationData[0]] <- struct{}{}
	return nil
}

func (p *resultPublisher) PublishOrWithdraw(ctx context.Context, m mqttside.Message) error {
	return p.Publish(ctx, m)
}

// BenchmarkCommand measures the bridge's own work for one command, from
// the broker's delivery to the result handed back to the broker: matching
// the topic and planning the request, the CON PUT to a device on loopback
// and its answer, the metrics and the result's JSON. 16 senders per CPU
// each keep one command in flight; the publisher takes the result at once
// (no broker), so ns/op is about the CPU per command when the CPUs are
// busy.
func BenchmarkCommand(b *testing.B) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	dev := &coapside.Server{Handler: coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		w.SetCode(message.Changed)
		w.SetContentFormat(message.TextPlain)
		_, _ = w.Write(r.Payload)
	})}
	served := make(chan error, 1)
	go func() { served <- dev.Serve(conn) }()
	defer func() {
		_ = dev.Close()
		<-served
	}()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.toml"), fmt.Appendf(nil, `
[[device]]
name = "dev1"
url  = "coap://%s"

[[command]]
name           = "actuators"
filter         = "cmd/{device}/{resource...}"
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = "replies/{device}/{resource...}"
timeout        = "5s"
`, conn.LocalAddr()), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg := testConfig()
	cfg.File = filepath.Join(dir, "config.toml")
	cfg.Rules = []string{"rules.toml"}
	cfg.HTTP.Listen = ""
	log := slog.New(slog.DiscardHandler)
	br, err := NewWithOptions(cfg, Options{CommandWorkers: 32}, log)
	if err != nil {
		b.Fatal(err)
	}
	defer br.devices.Close()
	pub := &resultPublisher{}
	for i := range pub.done {
		pub.done[i] = make(chan struct{}, 1)
	}
	c := newCommands(&br.set, br.subs, pub, br.devices, br.metrics, log, br.opts, maxPayload(cfg.MQTT))
	ran := make(chan error, 1)
	go func() { ran <- c.Run(context.Background()) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
		<-ran
	}()
	var ids atomic.Int32
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		id := byte(ids.Add(1) - 1)
		corr := []byte{id}
		n := 0
		for pb.Next() {
			n++
			payload := fmt.Appendf(nil, "bench %d %d", id, n)
			c.ServeMQTT(&mqttside.Delivery{Message: mqttside.Message{Topic: "cmd/dev1/actuators/led", Payload: payload, CorrelationData: corr}, Filter: "cmd/+/#"})
			<-pub.done[id]
		}
	})
}
