package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
)

func TestHistIndexRelativeError(t *testing.T) {
	for v := uint64(1); v < 1<<50; v = v*3/2 + 1 {
		got := histValue(histIndex(v))
		if rel := math.Abs(float64(got)-float64(v)) / float64(v); rel > 1.0/64 {
			t.Fatalf("value %d: bucket %d reads %d (%.2f %% off)", v, histIndex(v), got, rel*100)
		}
	}
	if i := histIndex(math.MaxUint64); i >= histBuckets {
		t.Fatalf("largest value in bucket %d of %d", i, histBuckets)
	}
}

func TestLatencyHistQuantiles(t *testing.T) {
	var h latencyHist
	for i := 1000; i >= 1; i-- {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	h.Record(-time.Second) // counts as zero
	near := func(name string, got, want time.Duration) {
		t.Helper()
		if math.Abs(float64(got-want)) > 0.02*float64(want) {
			t.Errorf("%s = %v, want about %v", name, got, want)
		}
	}
	near("p50", h.Quantile(0.5), 500*time.Millisecond)
	near("p99", h.Quantile(0.99), 990*time.Millisecond)
	if got := h.Quantile(1); got != time.Second {
		t.Errorf("max = %v, want exactly 1s", got)
	}
	s := h.summary(2 * time.Second)
	if s.Count != 1001 || s.Rate != 500.5 || s.MaxMs != 1000 {
		t.Errorf("summary %+v", s)
	}
	var empty latencyHist
	if empty.Quantile(0.5) != 0 || empty.summary(time.Second).Count != 0 {
		t.Error("empty histogram reports samples")
	}
}

func TestSeqSet(t *testing.T) {
	var a, b seqSet
	for _, s := range []uint64{0, 5, 63, 64, 1000, 5} {
		a.Add(s)
	}
	if a.Len() != 5 {
		t.Fatalf("Len = %d, want 5 (5 added twice)", a.Len())
	}
	if b.Add(64) != true || b.Add(64) != false {
		t.Fatal("Add does not report repeats")
	}
	b.Add(1000)
	if got := a.Missing(&b); got != 3 {
		t.Fatalf("Missing = %d, want 3 (0, 5, 63)", got)
	}
	if got := b.Missing(&a); got != 0 {
		t.Fatalf("Missing = %d, want 0", got)
	}
	var each []uint64
	a.EachMissing(&b, func(seq uint64) { each = append(each, seq) })
	if fmt.Sprint(each) != "[0 5 63]" {
		t.Fatalf("EachMissing = %v, want [0 5 63]", each)
	}
}

// TestBenchFleetPaths: every device serves each of its paths as an
// observable resource of its own, with the configured Max-Age, and a
// notification of one path reaches that path's observer only.
func TestBenchFleetPaths(t *testing.T) {
	verifyNoLeaks(t)
	paths := []string{"/bench/0", "/bench/1", "/bench/2"}
	f, err := newBenchFleet(benchFleetOptions{Count: 2, Host: "127.0.0.1", Prefix: "d", Paths: paths, MaxAge: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := coapside.NewClient(coapside.ClientOptions{LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type key struct{ dev, path int }
	got := make(map[key]chan string)
	for i, d := range f.devices {
		for p, path := range paths {
			ch := make(chan string, 8)
			got[key{i, p}] = ch
			first := true
			o, err := c.Observe(ctx, fmt.Sprintf("coap://%s%s", d.addr, path), func(n coapside.Notification) {
				if first {
					first = false
					if age := n.Options.MaxAge(); age != 7 {
						t.Errorf("%s %s: Max-Age %d, want 7", d.name, path, age)
					}
					return
				}
				ch <- string(n.Payload)
			})
			if err != nil {
				t.Fatalf("observe %s %s: %v", d.name, path, err)
			}
			defer func() { _ = o.Cancel(ctx) }()
		}
	}
	if n := f.Observed(); n != 6 {
		t.Fatalf("Observed = %d, want 6 (2 devices x 3 paths)", n)
	}
	if n := f.Notify(1, 2, []byte("one-two")); n != 1 {
		t.Fatalf("Notify(1, 2) notified %d observers, want 1", n)
	}
	select {
	case p := <-got[key{1, 2}]:
		if p != "one-two" {
			t.Fatalf("device 1 path 2 got %q", p)
		}
	case <-ctx.Done():
		t.Fatal("device 1 path 2: no notification")
	}
	for k, ch := range got {
		select {
		case p := <-ch:
			t.Errorf("device %d path %d got %q, notified was device 1 path 2", k.dev, k.path, p)
		default:
		}
	}
}

func TestBenchMarker(t *testing.T) {
	m := newBenchMarker()
	p := m.Encode(42, 1234567*time.Nanosecond, 64)
	if len(p) != 64 {
		t.Fatalf("payload %q: %d bytes, want 64", p, len(p))
	}
	seq, at, ok := m.Decode(p)
	if !ok || seq != 42 || at != 1234567 {
		t.Fatalf("Decode(%q) = %d, %v, %v", p, seq, at, ok)
	}
	if _, _, ok := m.Decode(m.Encode(7, 9, 0)); !ok {
		t.Fatal("unpadded payload not decoded")
	}
	other := newBenchMarker()
	for _, p := range [][]byte{other.Encode(1, 2, 64), []byte("21.5"), nil, []byte("bench " + m.run + " x 5"), []byte("bench " + m.run + " 5")} {
		if _, _, ok := m.Decode(p); ok {
			t.Errorf("Decode(%q) accepted a payload of no run or another run", p)
		}
	}
}

// TestBenchCommandResult: the status and marker of a command result are
// found whether the result is compact with the status first, as the bridge
// writes it, or laid out otherwise; results without a marker of this run
// are not taken.
func TestBenchCommandResult(t *testing.T) {
	m := newBenchMarker()
	marker := m.Encode(42, 1234567*time.Nanosecond, 64)
	for _, p := range []string{
		`{"status":"ok","rule":"r","topic":"cmd/bench-1/led","method":"PUT","code":"2.04","payload":"` + string(marker) + `","rtt_ms":0.4}`,
		`{"rule": "r", "payload": "` + string(marker) + `", "status": "ok"}`,
		`{"status":"ok","note":"\"payload\":\"x","payload":"` + string(marker) + `"}`,
	} {
		status, got, ok := m.commandResult([]byte(p))
		if !ok || status != "ok" || string(got) != string(marker) {
			t.Errorf("commandResult(%s) = %q, %q, %v", p, status, got, ok)
		}
	}
	other := newBenchMarker()
	for _, p := range []string{
		`{"status":"queued","rule":"r","position":1}`,
		`{"status":"ok","payload":"` + string(other.Encode(1, 2, 64)) + `"}`,
		`{"status":"ok","payload":{"a":1}}`,
		`not json`,
	} {
		if _, got, ok := m.commandResult([]byte(p)); ok {
			if _, _, own := m.Decode(got); own {
				t.Errorf("commandResult(%s) found a marker of this run: %q", p, got)
			}
		}
	}
}

func TestParseProcStat(t *testing.T) {
	// proc(5): pid (comm) state ppid ... utime(14) stime(15); comm may hold ") ".
	line := []byte("4242 (a) b c) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 100 700000000 4000 18446744073709551615")
	cpu, err := parseProcStat(line)
	if err != nil || cpu != 3*time.Second {
		t.Fatalf("parseProcStat = %v, %v; want 3s (300 ticks)", cpu, err)
	}
	if _, err := parseProcStat([]byte("4242 (x) S 1")); err == nil {
		t.Fatal("short line accepted")
	}
	status := []byte("Name:\tbridge\nVmPeak:\t  900 kB\nVmHWM:\t   61440 kB\nVmRSS:\t   51200 kB\nThreads:\t8\n")
	if got := parseStatusKB(status, "VmRSS"); got != 50<<20 {
		t.Fatalf("VmRSS = %d, want %d", got, 50<<20)
	}
	if got := parseStatusKB(status, "VmHWM"); got != 60<<20 {
		t.Fatalf("VmHWM = %d, want %d", got, 60<<20)
	}
	if _, err := readProc(os.Getpid()); err != nil {
		t.Fatalf("readProc(self): %v", err)
	}
}

func TestUDPInodes(t *testing.T) {
	// /proc/net/udp: port 5683 (0x1633) on 127.0.0.1 and on 0.0.0.0, one other.
	table := []byte(`   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 0100007F:1633 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 111 2 0000000000000000 0
  101: 00000000:1633 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 222 2 0000000000000000 0
  102: 0100007F:1634 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 333 2 0000000000000000 0
`)
	got := udpInodes(table, 5683)
	if len(got) != 2 || got[0] != "111" || got[1] != "222" {
		t.Fatalf("udpInodes = %v, want [111 222]", got)
	}
}

// TestBenchUsageErrors: misuse exits 2 with a message, before any load.
func TestBenchUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench"},
		{"bench", "ingress", "-w", "0"},
		{"bench", "ingress", "-d", "0s"},
		{"bench", "ingress", "-d", "11m"},
		{"bench", "ingress", "--qos", "3"},
		{"bench", "ingress", "--mqtt", "ftp://x"},
		{"bench", "ingress", "--method", "GET", "--topic", ""},
		{"bench", "ingress", "--coap", "http://x/y", "--topic", ""},
		{"bench", "ingress", "--pid", "abc", "--topic", ""},
		{"bench", "ingress", "--no-such-flag"},
		{"bench", "commands", "--topic", "cmd/led"},
		{"bench", "commands", "--rules", "--base-port", "0"},
		{"bench", "observe", "--rate", "0"},
		{"bench", "observe", "--topic", ""},
		{"bench", "observe", "--paths", "0"},
		{"bench", "observe", "--max-age", "500ms"},
		{"bench", "observe", "--max-age", "1500ms"},
	} {
		var out, errb bytes.Buffer
		if code := execute(args, &out, &errb); code != exitUsage || !strings.HasPrefix(errb.String(), "error: ") {
			t.Errorf("%q: exit %d, stderr %q; want %d and a message", args, code, errb.String(), exitUsage)
		}
	}
}

// TestBenchRulesAreAccepted: what --rules prints is a rule file the bridge
// loads, with the devices and rules the benchmark needs.
func TestBenchRulesAreAccepted(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"ingress":  {"bench", "ingress", "--rules", "--qos", "1", "--coap", "coap://127.0.0.1:5683/telemetry/bench-{n}/temp", "--topic", "sensors/+/temp"},
		"commands": {"bench", "commands", "--rules", "--devices", "3"},
		"observe":  {"bench", "observe", "--rules", "--devices", "2", "--paths", "3"},
	} {
		var out, errb bytes.Buffer
		if code := execute(args, &out, &errb); code != 0 {
			t.Fatalf("%s --rules: exit %d: %s", name, code, errb.String())
		}
		writeFile(t, filepath.Join(dir, "rules"), name+".toml", out.String())
	}
	cfg := writeFile(t, dir, "config.toml", "rules = [\"rules/*.toml\"]\n[mqtt]\nbroker = \"embedded\"\n")
	var out, errb bytes.Buffer
	if code := execute([]string{"check", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("check: exit %d: %s", code, errb.String())
	}
	if want := "(5 devices, 1 ingress, 1 observe, 0 poll, 1 command, 0 resource, 0 proxy rules)"; !strings.Contains(out.String(), want) {
		t.Fatalf("check: %q, want %q", out.String(), want)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "rules", "ingress.toml"))
	if !strings.Contains(string(b), `path    = "/telemetry/{device}/temp"`) || !strings.Contains(string(b), `topic   = "sensors/{device}/temp"`) {
		t.Fatalf("ingress rules:\n%s", b)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "rules", "observe.toml"))
	if !strings.Contains(string(b), `paths   = ["/bench/0", "/bench/1", "/bench/2"]`) {
		t.Fatalf("observe rules:\n%s", b)
	}
}

// TestBenchIngressCoAPOnly loads an in-process CoAP server without MQTT
// and checks the report's counts against what the server saw.
func TestBenchIngressCoAPOnly(t *testing.T) {
	verifyNoLeaks(t)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served, failed countingHandler
	mux := coapside.NewServeMux()
	mux.HandleFunc("POST /ok/{n}", served.serve(message.Changed))
	mux.HandleFunc("POST /fail", failed.serve(message.ServiceUnavailable))
	serveCoap(t, mux, conn)
	port := conn.LocalAddr().(*net.UDPAddr).Port

	var out, errb bytes.Buffer
	code := execute([]string{"bench", "ingress", "--coap", fmt.Sprintf("coap://127.0.0.1:%d/ok/{n}", port), "--topic", "",
		"-w", "4", "--devices", "3", "-d", "300ms", "--json", "--pid", fmt.Sprint(os.Getpid())}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r benchReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("report %q: %v", out.String(), err)
	}
	if r.Sent == 0 || r.Acked != r.Sent || r.Acked != served.n.Load() || r.Codes["2.04"] != r.Acked {
		t.Fatalf("sent %d acked %d codes %v; the server answered %d", r.Sent, r.Acked, r.Codes, served.n.Load())
	}
	if r.Request == nil || r.Request.Count != r.Acked || r.Request.P50Ms <= 0 || r.Request.MaxMs < r.Request.P99Ms || r.EndToEnd != nil {
		t.Fatalf("latency %+v, end to end %+v", r.Request, r.EndToEnd)
	}
	if r.Devices != 3 || len(r.Processes) != 1 || r.Processes[0].PID != os.Getpid() || r.Processes[0].RSSMaxMB <= 0 ||
		r.Processes[0].RSSStartMB <= 0 || r.Processes[0].RSSPeakMB < r.Processes[0].RSSMaxMB {
		t.Fatalf("devices %d, processes %+v", r.Devices, r.Processes)
	}

	// Error responses are counted by code and are not acknowledged; a run
	// where nothing succeeded still reports, and exits 1.
	out.Reset()
	errb.Reset()
	code = execute([]string{"bench", "ingress", "--coap", fmt.Sprintf("coap://127.0.0.1:%d/fail", port), "--topic", "",
		"-w", "2", "-d", "200ms", "--json"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "none of") {
		t.Fatalf("exit %d: %s, want 1 saying none succeeded", code, errb.String())
	}
	r = benchReport{}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Acked != 0 || r.Errors != r.Sent || r.Codes["5.03"] != failed.n.Load() || r.Sent != failed.n.Load() {
		t.Fatalf("sent %d acked %d errors %d codes %v; the server failed %d", r.Sent, r.Acked, r.Errors, r.Codes, failed.n.Load())
	}
}

// countingHandler answers every request with one code and counts them.
type countingHandler struct{ n atomic.Uint64 }

func (c *countingHandler) serve(code message.Code) func(coapside.ResponseWriter, *coapside.Request) {
	return func(w coapside.ResponseWriter, _ *coapside.Request) {
		c.n.Add(1)
		w.SetCode(code)
	}
}

// TestPaceStopsAtTheEndOfTheLoad: a rate the sender cannot reach does not
// stretch the load phase past -d: the schedule ends when its time is up,
// however many sends are behind it.
func TestPaceStopsAtTheEndOfTheLoad(t *testing.T) {
	mk := newBenchMarker()
	start := mk.now()
	end := start + 50*time.Millisecond
	n := 0
	for seq := uint64(0); ; seq++ {
		if _, ok := pace(t.Context(), mk, seq, 1e9, start, end); !ok {
			break
		}
		n++
		time.Sleep(time.Microsecond) // a send
		if mk.now() > end+time.Second {
			t.Fatalf("still scheduling %v after the end, %d sends", mk.now()-end, n)
		}
	}
	if n == 0 || n >= 50_000_000 {
		t.Fatalf("%d sends scheduled", n)
	}
}
