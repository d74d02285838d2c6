package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchReport is the part of a "bridge bench --json" report checked here.
type benchReport struct {
	Mode       string  `json:"mode"`
	Sent       uint64  `json:"sent"`
	Acked      uint64  `json:"acked"`
	Errors     uint64  `json:"errors"`
	Timeouts   uint64  `json:"timeouts"`
	Received   uint64  `json:"received"`
	Duplicates uint64  `json:"duplicates"`
	Lost       uint64  `json:"lost"`
	Superseded uint64  `json:"superseded"`
	Request    *counts `json:"request"`
	EndToEnd   *counts `json:"end_to_end"`
	Processes  []struct {
		PID        int     `json:"pid"`
		CPUPercent float64 `json:"cpu_percent"`
		RSSMaxMB   float64 `json:"rss_max_mb"`
	} `json:"processes"`

	Observations       int     `json:"observations"`
	EstablishedSeconds float64 `json:"established_s"`
}

type counts struct {
	Count uint64  `json:"count"`
	Rate  float64 `json:"rate_per_s"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// benchJSON runs "bridge bench" with --json and parses its report.
func benchJSON(t *testing.T, args ...string) benchReport {
	t.Helper()
	args = append(append([]string{"bench"}, args...), "--json")
	out, code := run(t, 90*time.Second, ".", bridgeBin(t), args...)
	if code != 0 {
		t.Fatalf("bridge %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	line := out[strings.LastIndexByte(strings.TrimSpace(out), '\n')+1:]
	var r benchReport
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("report %q: %v", out, err)
	}
	return r
}

// checkCounts asserts what holds of any run, however loaded the machine:
// answers are among the requests, what arrived was sent, and every
// acknowledged message either arrived or is counted lost.
func checkCounts(t *testing.T, r benchReport) {
	t.Helper()
	if r.Sent == 0 || r.Acked > r.Sent || r.Received > r.Sent || r.Lost > r.Acked || r.Acked-r.Lost > r.Received {
		t.Fatalf("%s: inconsistent counts %+v", r.Mode, r)
	}
	if r.EndToEnd == nil || r.EndToEnd.Count != r.Received || r.EndToEnd.MaxMs < r.EndToEnd.P99Ms || r.EndToEnd.P99Ms < r.EndToEnd.P50Ms {
		t.Fatalf("%s: end-to-end latency %+v with %d received", r.Mode, r.EndToEnd, r.Received)
	}
}

// TestE2EBench runs the three "bridge bench" modes against the built
// bridge with rules printed by "bridge bench --rules", and checks that
// the reports parse and their counts are consistent. No timing is
// asserted: the machine may be loaded.
func TestE2EBench(t *testing.T) {
	bin := bridgeBin(t)
	base := freeUDPRange(t, 8)
	rules := ""
	for _, args := range [][]string{
		{"bench", "ingress", "--rules", "--qos", "1"},
		{"bench", "commands", "--rules", "--devices", "4", "--base-port", strconv.Itoa(base)},
		{"bench", "observe", "--rules", "--devices", "4", "--paths", "2", "--base-port", strconv.Itoa(base + 4)},
	} {
		out, code := run(t, 20*time.Second, ".", bin, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, out)
		}
		rules += out
	}
	b := startBridgeBin(t, bridgeSetup{rules: rules})
	mqtt := fmt.Sprintf("tcp://127.0.0.1:%d", b.mqttPort)
	pid := strconv.Itoa(b.cmd.Process.Pid)

	r := benchJSON(t, "ingress", "--coap", b.coapURL("/bench/bench-{n}"), "--mqtt", mqtt, "--qos", "1",
		"-w", "8", "-d", "2s", "--drain", "20s", "--pid", pid)
	checkCounts(t, r)
	if r.Request == nil || r.Request.Count != r.Acked || r.Acked == 0 {
		t.Fatalf("ingress: CoAP latency %+v with %d acked", r.Request, r.Acked)
	}
	// QoS 1 all the way: every request the bridge answered 2.04 arrives.
	if r.Lost != 0 {
		t.Fatalf("ingress: lost %d of %d at QoS 1", r.Lost, r.Acked)
	}
	if len(r.Processes) != 1 || r.Processes[0].PID != b.cmd.Process.Pid || r.Processes[0].RSSMaxMB <= 0 || r.Processes[0].CPUPercent <= 0 {
		t.Fatalf("ingress: processes %+v, want the bridge (pid %s) with its CPU and RSS", r.Processes, pid)
	}

	r = benchJSON(t, "commands", "--devices", "4", "--base-port", strconv.Itoa(base), "--mqtt", mqtt, "--qos", "1",
		"-w", "4", "-d", "1s", "--drain", "20s", "--max-loss", "100")
	checkCounts(t, r)
	if r.Request == nil || r.Request.Count == 0 || r.Request.Count > r.Sent {
		t.Fatalf("commands: to-device latency %+v, %d sent", r.Request, r.Sent)
	}

	r = benchJSON(t, "observe", "--devices", "4", "--paths", "2", "--max-age", "5s", "--base-port", strconv.Itoa(base+4), "--mqtt", mqtt,
		"--rate", "200", "-d", "1s", "--drain", "20s", "--max-loss", "100")
	checkCounts(t, r)
	if r.Received == 0 || r.Observations != 8 || r.EstablishedSeconds <= 0 {
		t.Fatalf("observe: %d received, %d observations established after %v s, want 4 devices x 2 paths: %+v",
			r.Received, r.Observations, r.EstablishedSeconds, r)
	}
}
