package observe

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

// registerObservers registers total observers spread evenly over resources
// paths, with realistic endpoint strings and 8-byte tokens.
func registerObservers(b *testing.B, n *Notifier, total, resources int) {
	for i := range total {
		ep := fmt.Sprintf("10.%d.%d.%d:5683", i>>16&255, i>>8&255, i&255)
		tok := []byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i), 0xa5, 0x5a, 0x01, 0x02}
		if _, err := n.Register(fmt.Sprintf("/sensors/%d", i%resources), ep, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkRegistryMemory reports the heap bytes held per registered
// observer, endpoint and token strings included.
func BenchmarkRegistryMemory(b *testing.B) {
	const total = 10_000
	for _, resources := range []int{1, 1_000} {
		b.Run(fmt.Sprintf("observers=%d/resources=%d", total, resources), func(b *testing.B) {
			var perObs float64
			for range b.N {
				before := heapInUse()
				n := New(SenderFunc(func(context.Context, Notification) error { return nil }), Options{})
				registerObservers(b, n, total, resources)
				after := heapInUse()
				runtime.KeepAlive(n)
				perObs += float64(after-before) / total
			}
			b.ReportMetric(perObs/float64(b.N), "bytes/observer")
		})
	}
}

// BenchmarkFanOut measures notifications per second from Notify to a no-op
// Sender with 10,000 observers on one resource.
func BenchmarkFanOut(b *testing.B) {
	const total = 10_000
	var sent atomic.Int64
	done := make(chan struct{}, 1)
	var target atomic.Int64
	s := SenderFunc(func(context.Context, Notification) error {
		if sent.Add(1) == target.Load() {
			done <- struct{}{}
		}
		return nil
	})
	n := New(s, Options{})
	registerObservers(b, n, total, 1)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { n.Run(ctx); close(runDone) }()
	defer func() { cancel(); <-runDone }()

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		target.Store(int64(total * (i + 1)))
		n.Notify("/sensors/0", State{Payload: []byte("21.5"), MaxAge: 60})
		<-done
	}
	b.StopTimer()
	b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "notifications/s")
}
