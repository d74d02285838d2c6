package bridge

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// quietDevices are many UDP sockets, each answering a registration with
// a first notification and staying silent after: devices as cheap as
// possible, so what an observation costs the bridge can be told from what
// it costs them. One goroutine serves each socket.
type quietDevices struct {
	conns []*net.UDPConn
	regs  atomic.Int64 // registrations answered
	wg    sync.WaitGroup

	// delay is how long a device takes to answer a registration; inFlight
	// counts the registrations being answered, maxInFlight the most at once.
	delay                 time.Duration
	inFlight, maxInFlight atomic.Int64
}

func startQuietDevices(t *testing.T, n int) *quietDevices {
	return startSlowDevices(t, n, 0)
}

// startSlowDevices starts quiet devices that answer a registration after
// delay.
func startSlowDevices(t *testing.T, n int, delay time.Duration) *quietDevices {
	t.Helper()
	q := &quietDevices{delay: delay}
	for range n {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		q.conns = append(q.conns, c)
		q.wg.Go(func() { q.serve(c) })
	}
	t.Cleanup(func() {
		for _, c := range q.conns {
			c.Close()
		}
		q.wg.Wait()
	})
	return q
}

func (q *quietDevices) serve(c *net.UDPConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return
		}
		var m message.Message
		if m.Unmarshal(buf[:n]) != nil || m.Type != message.Confirmable {
			continue
		}
		r := &message.Message{Type: message.Acknowledgement, MessageID: m.MessageID, Token: m.Token}
		if m.Code == message.GET {
			if v, ok := m.Options.Observe(); ok && v == 0 {
				q.answerLater()
				r.Code = message.Content
				r.Options = r.Options.SetUint(message.Observe, 2).SetUint(message.MaxAge, 3600)
				r.Payload = []byte("21")
				q.regs.Add(1)
			} else {
				r.Code = message.NotFound
			}
		}
		if b, err := r.MarshalBinary(); err == nil {
			_, _ = c.WriteToUDP(b, from)
		}
	}
}

// answerLater takes q.delay, counted as a registration in flight.
func (q *quietDevices) answerLater() {
	if q.delay <= 0 {
		return
	}
	n := q.inFlight.Add(1)
	for {
		m := q.maxInFlight.Load()
		if n <= m || q.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(q.delay) // the device's own latency
	q.inFlight.Add(-1)
}

// quietRules observes paths paths on every device of q.
func quietRules(q *quietDevices, paths int) string {
	var b strings.Builder
	var names, ps []string
	for i, c := range q.conns {
		fmt.Fprintf(&b, "[[device]]\nname = \"q%d\"\nurl = \"coap://%s\"\n\n", i, c.LocalAddr())
		names = append(names, strconv.Quote(fmt.Sprint("q", i)))
	}
	for p := range paths {
		ps = append(ps, strconv.Quote(fmt.Sprint("/r", p)))
	}
	fmt.Fprintf(&b, "[[observe]]\nname = \"quiet\"\ndevices = [%s]\npaths = [%s]\ntopic = \"q/{device}/{path...}\"\n",
		strings.Join(names, ", "), strings.Join(ps, ", "))
	return b.String()
}

// memNow returns the live heap and the goroutine stacks after a collection.
func memNow() (heap, stacks int64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc), int64(ms.StackInuse)
}

// TestMeasureObservationMemory measures what holding an observation costs
// the bridge: heap bytes and goroutines per observation, from the
// difference between bridges holding two numbers of observations (so the
// bridge's own fixed cost drops out). The devices (quietDevices) are
// started before each baseline. It runs with BRIDGE_MEASURE=1 (the
// numbers of devices and paths per device from BRIDGE_MEASURE_DEVICES and
// BRIDGE_MEASURE_PATHS, default 1,000 and 2) and only logs its figures;
// BRIDGE_MEASURE_HEAPPROFILE names a file for a heap profile taken while
// the larger number is held.
func TestMeasureObservationMemory(t *testing.T) {
	if os.Getenv("BRIDGE_MEASURE") == "" {
		t.Skip("set BRIDGE_MEASURE=1 to measure")
	}
	if os.Getenv("BRIDGE_MEASURE_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 4096
	}
	devices, paths := envInt("BRIDGE_MEASURE_DEVICES", 1000), envInt("BRIDGE_MEASURE_PATHS", 2)
	type point struct {
		obs        int
		heap       int64
		stacks     int64
		goroutines int
	}
	measure := func(devices int) point {
		q := startQuietDevices(t, devices)
		g0 := runtime.NumGoroutine()
		h0, s0 := memNow()
		tb := startBridge(t, quietRules(q, paths), nil)
		want := devices * paths
		testkit.Eventually(t, 120*time.Second, "every resource observed", func() bool {
			return testutil.ToFloat64(tb.metrics.observations) == float64(want)
		})
		time.Sleep(time.Second) // let the registrations' exchanges settle
		h1, s1 := memNow()
		if f := os.Getenv("BRIDGE_MEASURE_HEAPPROFILE"); f != "" {
			writeHeapProfile(t, f) // the last (largest) point's
		}
		p := point{obs: want, heap: h1 - h0, stacks: s1 - s0, goroutines: runtime.NumGoroutine() - g0}
		t.Logf("%d devices × %d paths: %d observations, heap +%d KB, stacks +%d KB, goroutines +%d, registrations %d",
			devices, paths, want, p.heap>>10, p.stacks>>10, p.goroutines, q.regs.Load())
		tb.stop(t)
		return p
	}
	small := measure(devices / 4)
	large := measure(devices)
	n := int64(large.obs - small.obs)
	t.Logf("per observation: %d bytes of heap, %d bytes of stacks, %.2f goroutines (%d devices × %d paths vs a quarter of them)",
		(large.heap-small.heap)/n, (large.stacks-small.stacks)/n, float64(large.goroutines-small.goroutines)/float64(n), devices, paths)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func writeHeapProfile(t *testing.T, name string) {
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
}

// TestObservationsHeldWithoutGoroutines: while the bridge holds
// observations, no goroutine waits in the observe loop for each of them
// (their end or the watch's resumes it), so a bridge holding 100k of them
// does not keep 100k goroutine stacks.
func TestObservationsHeldWithoutGoroutines(t *testing.T) {
	const devices, paths = 25, 2
	q := startQuietDevices(t, devices)
	tb := startBridge(t, quietRules(q, paths), nil)
	testkit.Eventually(t, 30*time.Second, "every resource observed", func() bool {
		return testutil.ToFloat64(tb.metrics.observations) == devices*paths
	})
	// The gauge counts an observation before the goroutine that
	// established it returns: give those their way out, then none may stay.
	waiting := func() int {
		n := 0
		for _, g := range runGoroutinesCounted(tb.label) {
			if strings.Contains(g.stack, "bridge.(*watcher).observe") || strings.Contains(g.stack, "bridge.(*observeLoop)") {
				n += g.n
			}
		}
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	for n := waiting(); n > 0; n = waiting() {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines in the observe loop while %d observations are held", n, devices*paths)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestObservationsEstablishBounded: a bridge with many observations to
// establish registers at most MaxEstablishing of them at once (the others
// wait without a goroutine), and establishes all of them.
func TestObservationsEstablishBounded(t *testing.T) {
	const devices, paths, limit = 24, 2, 4
	q := startSlowDevices(t, devices, 20*time.Millisecond)
	tb := startBridge(t, quietRules(q, paths), func(_ *Config, o *Options) { o.MaxEstablishing = limit })
	testkit.Eventually(t, 60*time.Second, "every resource observed", func() bool {
		return testutil.ToFloat64(tb.metrics.observations) == devices*paths
	})
	if n := q.maxInFlight.Load(); n > limit {
		t.Fatalf("%d registrations in flight at once, want at most %d", n, limit)
	}
	if n := q.regs.Load(); n < devices*paths {
		t.Fatalf("%d registrations answered for %d observations", n, devices*paths)
	}
}

// countedStack is a stack shared by n goroutines.
type countedStack struct {
	n     int
	stack string
}

// runGoroutinesCounted is runGoroutines with the number of goroutines
// sharing each stack.
func runGoroutinesCounted(label string) []countedStack {
	var out []countedStack
	for _, g := range runGoroutines(label) {
		n, _, _ := strings.Cut(g, " @ ")
		c, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil {
			c = 1
		}
		out = append(out, countedStack{n: c, stack: g})
	}
	return out
}
