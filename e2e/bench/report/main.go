// Command report turns the runs of e2e/bench/run.sh into results.md: it
// reads lines "<scenario>\t<bridge bench --json report>" and a machine
// description, takes for each scenario the median run by rate, and prints
// a Markdown table with ratios to the bare coapside server and to
// libcoap's server measured in the same run.
//
//	go run ./e2e/bench/report -runs runs.tsv -machine machine.txt -title "..." > results.md
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// benchRun is the part of a "bridge bench --json" report the table uses.
type benchRun struct {
	Sent     uint64    `json:"sent"`
	Acked    uint64    `json:"acked"`
	Timeouts uint64    `json:"timeouts"`
	Lost     uint64    `json:"lost"`
	LossPct  float64   `json:"loss_percent"`
	Request  *latency  `json:"request"`
	EndToEnd *latency  `json:"end_to_end"`
	Procs    []process `json:"processes"`
}

type latency struct {
	Rate  float64 `json:"rate_per_s"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

type process struct {
	Name       string  `json:"name"`
	CPUPercent float64 `json:"cpu_percent"`
	CPUMicros  float64 `json:"cpu_us_per_msg"`
	RSSMaxMB   float64 `json:"rss_max_mb"`
}

// headline is the latency a scenario is judged by: end to end when
// something subscribed, else the CoAP request.
func (r benchRun) headline() latency {
	if r.EndToEnd != nil && r.EndToEnd.Rate > 0 {
		return *r.EndToEnd
	}
	if r.Request != nil {
		return *r.Request
	}
	return latency{}
}

// cpuPerMsg is the CPU time per message of every process reported
// (the bridge and its broker), in microseconds.
func (r benchRun) cpuPerMsg() float64 {
	var t float64
	for _, p := range r.Procs {
		t += p.CPUMicros
	}
	return t
}

// scenario is every run of one scenario, in input order.
type scenario struct {
	name string
	runs []benchRun
}

// median is the run with the median headline rate.
func (s *scenario) median() benchRun {
	rs := slices.Clone(s.runs)
	slices.SortFunc(rs, func(a, b benchRun) int {
		switch x, y := a.headline().Rate, b.headline().Rate; {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	return rs[len(rs)/2]
}

func main() {
	runs := flag.String("runs", "", "file of <scenario>\\t<json> lines")
	machine := flag.String("machine", "", "machine description (Markdown) to include")
	title := flag.String("title", "Benchmark results", "heading")
	notes := flag.String("notes", "", "text put under the table")
	flag.Parse()
	if err := run(*runs, *machine, *title, *notes, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(runsPath, machinePath, title, notes string, w io.Writer) error {
	f, err := os.Open(runsPath)
	if err != nil {
		return err
	}
	defer f.Close()
	scs, err := parseRuns(f)
	if err != nil {
		return err
	}
	var machine []byte
	if machinePath != "" {
		if machine, err = os.ReadFile(machinePath); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "# %s\n\n", title)
	writeTable(w, scs)
	if notes != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(notes))
	}
	if len(machine) > 0 {
		fmt.Fprintf(w, "\n## Machine\n\n%s\n", strings.TrimSpace(string(machine)))
	}
	return nil
}

// parseRuns reads the scenario lines, keeping scenarios in first-seen order.
func parseRuns(r io.Reader) ([]*scenario, error) {
	var out []*scenario
	by := map[string]*scenario{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		name, js, ok := strings.Cut(text, "\t")
		if !ok {
			return nil, fmt.Errorf("line %d: want <scenario>\\t<json>", line)
		}
		var br benchRun
		if err := json.Unmarshal([]byte(js), &br); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		s := by[name]
		if s == nil {
			s = &scenario{name: name}
			by[name] = s
			out = append(out, s)
		}
		s.runs = append(s.runs, br)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no runs")
	}
	return out, nil
}

// Reference scenarios for the ratio columns (names used by run.sh).
const (
	refBare    = "coapside bare server"
	refLibcoap = "libcoap coap-server"
)

func writeTable(w io.Writer, scs []*scenario) {
	refs := map[string]float64{}
	libcoapCPU := 0.0
	for _, s := range scs {
		if s.name == refBare || s.name == refLibcoap {
			refs[s.name] = s.median().headline().Rate
		}
		if s.name == refLibcoap {
			libcoapCPU = s.median().cpuPerMsg()
		}
	}
	ratio := func(rate float64, ref string) string {
		if refs[ref] <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", rate/refs[ref])
	}
	fmt.Fprintln(w, "| scenario | runs | rate/s (median) | p50 ms | p99 ms | max ms | CoAP rate/s | lost | vs bare | vs libcoap | CPU % | CPU µs/msg | CPU/msg vs libcoap | RSS MB |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range scs {
		m := s.median()
		h := m.headline()
		coapRate := "–"
		if m.Request != nil {
			coapRate = fmt.Sprintf("%.0f", m.Request.Rate)
		}
		lost := "–"
		if m.EndToEnd != nil {
			lost = fmt.Sprintf("%d (%.2f %%)", m.Lost, m.LossPct)
		}
		cpu, us, rss := "–", "–", "–"
		if len(m.Procs) > 0 {
			var c, u, r []string
			for _, p := range m.Procs {
				c = append(c, fmt.Sprintf("%.0f", p.CPUPercent))
				u = append(u, fmt.Sprintf("%.0f", p.CPUMicros))
				r = append(r, fmt.Sprintf("%.0f", p.RSSMaxMB))
			}
			cpu, us, rss = strings.Join(c, " + "), strings.Join(u, " + "), strings.Join(r, " + ")
		}
		cpuRatio := "–"
		if c := m.cpuPerMsg(); c > 0 && libcoapCPU > 0 {
			cpuRatio = fmt.Sprintf("%.1f", c/libcoapCPU)
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %.2f | %.2f | %.2f | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			s.name, len(s.runs), h.Rate, h.P50Ms, h.P99Ms, h.MaxMs, coapRate, lost,
			ratio(h.Rate, refBare), ratio(h.Rate, refLibcoap), cpu, us, cpuRatio, rss)
	}
}
