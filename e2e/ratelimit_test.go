package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
)

// TestE2ERateLimitShedsAFloodAndServesOthers runs the built bridge with
// coap.rate_limit = 100 and floods it from 127.0.0.1 (NON and CON, paced at
// about 25,000/s and flat out) while a well-behaved device on 127.0.0.2
// pushes 50 CON requests a second, retransmitting as CoAP does. The device
// must lose nothing; its p99 latency with and without the flood, and the
// bridge's CPU per flood datagram, are logged. BRIDGE_E2E_MEASURE=1 runs the
// same with the limit off for comparison (no assertions there), 2 s a flood.
func TestE2ERateLimitShedsAFloodAndServesOthers(t *testing.T) {
	limits, length := []string{"100"}, time.Second
	if os.Getenv("BRIDGE_E2E_MEASURE") == "1" {
		limits, length = append(limits, "0"), 2*time.Second
	}
	for _, limit := range limits {
		t.Run("rate_limit="+limit, func(t *testing.T) { floodAndMeasure(t, limit, limit != "0", length) })
	}
}

// floodAndMeasure runs the floods against a bridge with coap.rate_limit =
// limit, each for length; check asserts that nothing is lost.
func floodAndMeasure(t *testing.T, limit string, check bool, length time.Duration) {
	b := startBridgeBin(t, bridgeSetup{rules: ingressRule, env: []string{"BRIDGE_COAP_RATE_LIMIT=" + limit}})
	good, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no second loopback address: %v", err)
	}
	defer good.Close()
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: b.coapPort}

	wellBehaved(t, good, addr, time.Second, 20*time.Millisecond) // warm up (MQTT session, readers)
	for i, f := range []peer.Flood{
		{Type: message.NonConfirmable, Paced: true},
		{Type: message.Confirmable, Paced: true},
		{Type: message.NonConfirmable},
		{Type: message.Confirmable},
	} {
		// Each flood from an address of its own: the one before is still
		// blocked (coap.rate_block, 10 s by default).
		f.Path, f.Length, f.From = []string{"telemetry", "flood", "temp"}, length, net.IPv4(127, 0, 0, byte(40+i))
		// The unloaded figure is taken right before each flood, so both
		// see the same load from whatever else runs on the machine.
		base := wellBehaved(t, good, addr, length, 20*time.Millisecond)
		if check && base.lost != 0 {
			t.Fatalf("unloaded: %d of %d requests lost", base.lost, base.sent)
		}
		recv0, limited0 := metric(t, b, "bridge_coap_received_total"), metric(t, b, "bridge_coap_rate_limited_total")
		blocked0, kdrops0 := metric(t, b, "bridge_coap_sources_blocked_total"), metric(t, b, "bridge_coap_kernel_drops_total")
		cpu0 := procCPU(t, b.cmd.Process.Pid)
		var sent int
		var wg sync.WaitGroup
		wg.Go(func() { sent = f.Run(t, addr) })
		res := wellBehaved(t, good, addr, length, 20*time.Millisecond)
		wg.Wait()
		cpu := procCPU(t, b.cmd.Process.Pid) - cpu0
		recv := metric(t, b, "bridge_coap_received_total") - recv0
		limited := metric(t, b, "bridge_coap_rate_limited_total") - limited0
		blocked, kdrops := metric(t, b, "bridge_coap_sources_blocked_total")-blocked0, metric(t, b, "bridge_coap_kernel_drops_total")-kdrops0
		t.Logf("%v flood from %v: %d sent, %.0f received, %.0f rate limited, source blocked %.0f times, %.0f dropped by the kernel; second source unloaded: p50 %v, p99 %v; under the flood: %d requests, p50 %v, p99 %v (%.2f× unloaded), retransmitted %d, lost %d; bridge CPU %v = %.2f µs per received datagram",
			f, f.From, sent, recv, limited, blocked, kdrops, base.p50, base.p99, res.sent, res.p50, res.p99, float64(res.p99)/float64(base.p99), res.retransmitted, res.lost, cpu, float64(cpu.Microseconds())/recv)
		if !check {
			continue
		}
		if res.lost != 0 {
			t.Errorf("%v flood: the second source lost %d of %d requests", f, res.lost, res.sent)
		}
		// Far past its limit, the flooder is dropped by the kernel: the
		// bridge reads a fraction of what it sent.
		if limit != "0" && (blocked != 1 || kdrops < float64(sent)/2 || recv > float64(sent)/2) {
			t.Errorf("%v flood: source blocked %.0f times (want 1), %.0f of %d dropped by the kernel, %.0f read", f, blocked, kdrops, sent, recv)
		}
	}
}

// burstResult is what the well-behaved source saw.
type burstResult struct {
	sent, retransmitted, lost int
	p50, p99, max             time.Duration
}

// wellBehaved sends a CON POST at most once per every for length from conn, waiting
// for each answer (2.04) and retransmitting after 1 s, 2 s, 4 s (RFC 7252
// §4.2 with ACK_TIMEOUT 1 s); a request never answered is lost. Latency is
// from the first transmission to the answer.
func wellBehaved(t *testing.T, conn *net.UDPConn, to *net.UDPAddr, length, every time.Duration) burstResult {
	t.Helper()
	var res burstResult
	var lat []time.Duration
	buf := make([]byte, 1500)
	end := time.Now().Add(length)
	for mid := uint16(1); time.Now().Before(end); mid++ {
		next := time.Now().Add(every)
		req := message.Message{Type: message.Confirmable, Code: message.POST, MessageID: mid, Token: []byte{byte(mid >> 8), byte(mid)}, Payload: []byte("21.5")}
		req.Options = req.Options.SetPath("/telemetry/good/temp")
		wire, err := req.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res.sent++
		answered := false
		for try, timeout := 0, time.Second; try <= 3 && !answered; try, timeout = try+1, 2*timeout {
			if try > 0 {
				res.retransmitted++
			}
			if _, err := conn.WriteToUDP(wire, to); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(timeout))
			for !answered {
				n, _, err := conn.ReadFromUDP(buf)
				if err != nil {
					break
				}
				m, err := message.Decode(buf[:n])
				if err == nil && m.MessageID == mid && m.Code == message.Changed {
					answered = true
					lat = append(lat, time.Since(start))
				}
			}
		}
		if !answered {
			res.lost++
		}
		time.Sleep(time.Until(next))
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p50 = lat[len(lat)/2]
		res.p99 = lat[(len(lat)*99+99)/100-1]
		res.max = lat[len(lat)-1]
	}
	return res
}

// metric reads an unlabelled metric from the bridge's /metrics.
func metric(t *testing.T, b *bridgeProc, name string) float64 {
	t.Helper()
	return metrics(t, b, name)[name]
}

// metrics reads unlabelled metrics from one scrape of the bridge's
// /metrics; a missing one fails the test.
func metrics(t *testing.T, b *bridgeProc, names ...string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", b.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	out := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		for _, name := range names {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatal(err)
				}
				out[name] = f
			}
		}
	}
	for _, name := range names {
		if _, ok := out[name]; !ok {
			t.Fatalf("metric %s missing", name)
		}
	}
	return out
}

// procCPU is the user+system CPU time of process pid (Linux /proc).
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	// Fields after the parenthesised command name: utime is the 14th field
	// of the line, stime the 15th, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
