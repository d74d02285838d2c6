package coapside

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkObserveClient holds 10,000 observations (100 per resource on
// 100 resources) against `coapload observe-server`, which notifies every
// resource once a second (10,000 notifications/s offered). One iteration is
// 10,000 notifications delivered to callbacks. Set COAPLOAD to the coapload
// binary (cd /work/shared/tools/coapload && go build -o /tmp/coapload .);
// without it the benchmark is skipped. Reported: notifications/s, heap bytes
// per observation, CPU µs per notification (this process only), RSS.
func BenchmarkObserveClient(b *testing.B) {
	bin := os.Getenv("COAPLOAD")
	if bin == "" {
		b.Skip("COAPLOAD (path to the coapload binary) not set")
	}
	const (
		observations = 10000
		resources    = 100
	)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	listen := "127.0.0.1:" + strconv.Itoa(port)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "observe-server", "-listen", listen, "-k", strconv.Itoa(resources), "-rate", "1", "-d", "300s", "-drain", "0s")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	c, err := NewClient(ClientOptions{LocalAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if uc, ok := c.Endpoint().Conn().(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(4 << 20)
	}
	// Wait for the server.
	for deadline := time.Now().Add(5 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := c.Get(ctx, "coap://"+listen+"/sensors/0")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("coapload did not come up: %v\n%s", err, stderr.String())
		}
	}

	var received atomic.Int64
	fn := func(Notification) { received.Add(1) }
	before := heapInUse()
	obsList := make([]*Observation, observations)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < observations; i += 32 {
				o, err := c.Observe(context.Background(), fmt.Sprintf("coap://%s/sensors/%d", listen, i%resources), fn)
				if err != nil {
					errs <- err
					return
				}
				obsList[i] = o
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	perObservation := float64(heapInUse()-before) / observations

	b.ResetTimer()
	received.Store(0)
	cpu0 := cpuTime()
	start := time.Now()
	for i := range b.N {
		want := int64(i+1) * observations
		for deadline := time.Now().Add(10 * time.Second); received.Load() < want; {
			if time.Now().After(deadline) {
				b.Fatalf("received %d of %d notifications", received.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	got := received.Load()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "notifications/s")
	b.ReportMetric(perObservation, "heapB/observation")
	b.ReportMetric(float64(cpu.Microseconds())/float64(got), "cpu-µs/notification")
	b.ReportMetric(float64(rssBytes())/(1<<20), "RSS-MiB")
	live := 0
	for _, o := range obsList {
		select {
		case <-o.Done():
		default:
			live++
		}
	}
	if live != observations {
		b.Errorf("%d of %d observations still running", live, observations)
	}
}
