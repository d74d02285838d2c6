package bridge

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/prometheus/client_golang/prometheus"
)

// dashboardFile is the Grafana dashboard shipped in deploy/.
const dashboardFile = "../deploy/grafana/bridge.json"

// TestDashboardQueriesExportedMetrics: every metric the Grafana dashboard
// queries (panel targets and template variables) is one a running bridge
// exports, with a coaps listener, the embedded broker and per-device
// metrics on (metrics.per_device: the per-device row's queries), so every
// family is registered; a histogram's _bucket, _sum and _count count as
// its name.
func TestDashboardQueriesExportedMetrics(t *testing.T) {
	exported := exportedByFullBridge(t)

	queries := dashboardQueries(t, dashboardFile)
	if len(queries) < 20 {
		t.Fatalf("only %d queries in %s", len(queries), dashboardFile)
	}
	used := 0
	queried := map[string]bool{}
	for _, q := range queries {
		names := promqlMetricNames(q.expr)
		for _, n := range names {
			queried[n] = true
		}
		if len(names) == 0 {
			t.Errorf("%s: no metric name in %q", q.where, q.expr)
		}
		for _, n := range names {
			used++
			if !isExported(n, exported) {
				t.Errorf("%s queries %s, which the bridge does not export (in %q)", q.where, n, q.expr)
			}
		}
	}
	// The dashboard covers what it is for: messages and errors per rule,
	// latency, observations, presence, the MQTT buffer, DTLS handshakes
	// and the per-device metrics.
	for _, must := range []string{"bridge_rule_messages_total", "bridge_rule_errors_total", "bridge_rule_latency_seconds_bucket",
		"bridge_observations_active", "bridge_presence_devices", "bridge_mqtt_offline_buffer_depth", "bridge_dtls_handshakes_ok_total",
		"bridge_device_messages_total", "bridge_device_errors_total", "bridge_device_last_seen_timestamp_seconds", "bridge_device_metrics_overflow_total",
		"bridge_proxy_requests_total", "bridge_proxy_cache_hits_total", "bridge_proxy_device_requests_total"} {
		if !queried[must] {
			t.Errorf("no panel of %s queries %s", dashboardFile, must)
		}
	}
	t.Logf("%d queries, %d metric references, %d families exported", len(queries), used, len(exported))
}

// TestREADMEDocumentsEveryMetric: every bridge_* family a running bridge
// exports (the dashboard test's bridge) is named in README.md, spelled
// out, in a brace list (`bridge_mqtt_{published,failed}_total`) or as a
// suffix after a spelled-out name (`bridge_proxy_cache_hits_total`,
// `_misses_total`).
func TestREADMEDocumentsEveryMetric(t *testing.T) {
	exported := exportedByFullBridge(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := readmeMetrics(string(readme))
	n := 0
	for name := range exported {
		if !strings.HasPrefix(name, "bridge_") {
			continue // the Go runtime's and the process's
		}
		n++
		if !documented(name) {
			t.Errorf("README.md does not name %s", name)
		}
	}
	if n < 50 {
		t.Fatalf("only %d bridge_* families exported", n)
	}
}

// readmeMetrics returns whether a metric name is named in the README text
// (see TestREADMEDocumentsEveryMetric).
func readmeMetrics(text string) func(string) bool {
	code := regexp.MustCompile("`([^`]+)`")
	brace := regexp.MustCompile(`\{([^{}]*)\}`)
	full := map[string]bool{}
	type suffix struct{ after, suffix string }
	var suffixes []suffix
	last := ""
	// Code spans may run over a line break, not out of a paragraph;
	// fenced blocks are no prose.
	var prose []string
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			line = ""
		}
		if fenced || strings.TrimSpace(line) == "" {
			prose = append(prose, "\n")
			continue
		}
		prose = append(prose, line, " ")
	}
	var spans [][]string
	for _, para := range strings.Split(strings.Join(prose, ""), "\n") {
		spans = append(spans, code.FindAllStringSubmatch(para, -1)...)
	}
	for _, m := range spans {
		tok := m[1]
		names := []string{tok}
		if b := brace.FindStringSubmatchIndex(tok); b != nil {
			names = nil
			for _, alt := range strings.Split(tok[b[2]:b[3]], ",") {
				if !strings.Contains(tok[b[2]:b[3]], ",") {
					alt = "" // {reason}: the labels
				}
				names = append(names, tok[:b[0]]+strings.TrimSpace(alt)+tok[b[1]:])
			}
		}
		for _, name := range names {
			switch {
			case strings.HasPrefix(name, "bridge_"):
				full[name], last = true, name
			case strings.HasPrefix(name, "_") && last != "":
				suffixes = append(suffixes, suffix{last, name})
			}
		}
	}
	return func(name string) bool {
		if full[name] {
			return true
		}
		for _, s := range suffixes {
			if head, ok := strings.CutSuffix(name, s.suffix); ok && strings.HasPrefix(s.after, head+"_") {
				return true
			}
		}
		return false
	}
}

// exportedByFullBridge starts a bridge with a coaps listener, the embedded
// broker and per-device metrics on (metrics.per_device), so every family
// is registered, pushes once so the latency histogram has a series, and
// lists what its registry exports (see exportedMetrics).
func exportedByFullBridge(t *testing.T) map[string]string {
	t.Helper()
	pskFile := filepath.Join(t.TempDir(), "psk.toml")
	if err := os.WriteFile(pskFile, []byte("[[psk]]\nidentity = \"d1\"\nkey = \"k\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, `
[[ingress]]
name  = "t"
path  = "/t/{device}"
topic = "t/{device}"
`, func(c *Config, _ *Options) {
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
		c.Metrics.PerDevice = true
	})
	// One push, so the latency histogram has a series and Gather tells
	// its type.
	resp, err := newCoAPClient(t).Post(t.Context(), tb.coapURL("/t/d1"), message.TextPlain, []byte("1"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("push: %v %v", resp, err)
	}
	exported := exportedMetrics(t, tb.reg)
	for _, must := range []string{"bridge_rule_messages_total", "bridge_rule_errors_total", "bridge_dtls_handshakes_ok_total", "bridge_mqtt_offline_buffer_depth", "bridge_presence_devices", "bridge_device_messages_total"} {
		if _, ok := exported[must]; !ok {
			t.Fatalf("the registry does not list %s: the way names are read from it is broken (%d names)", must, len(exported))
		}
	}
	return exported
}

// exportedMetrics lists every metric family the registry holds, series or
// not (a labelled family has none until first used), with its type as
// Gather names it ("HISTOGRAM") where a series exists, "" otherwise.
func exportedMetrics(t *testing.T, reg *prometheus.Registry) map[string]string {
	t.Helper()
	out := map[string]string{}
	ch := make(chan *prometheus.Desc)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	// A Desc does not export its name; its String form has it.
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			out[m[1]] = ""
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		out[f.GetName()] = f.GetType().String() // COUNTER, GAUGE, HISTOGRAM, ...
	}
	return out
}

// isExported reports whether a name in a query is an exported metric, or
// the _bucket, _sum or _count series of an exported histogram (_sum and
// _count of a summary).
func isExported(name string, exported map[string]string) bool {
	if _, ok := exported[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch exported[base] {
		case "HISTOGRAM", "GAUGE_HISTOGRAM":
			return true
		case "SUMMARY":
			return suffix != "_bucket"
		}
	}
	return false
}

// dashQuery is one PromQL query of the dashboard and where it is.
type dashQuery struct {
	where string
	expr  string
}

// dashboardQueries reads the PromQL of every panel target (nested rows
// included) and of every query template variable.
func dashboardQueries(t *testing.T, file string) []dashQuery {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out []dashQuery
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, dashQuery{where: "panel " + `"` + p.Title + `" ` + tg.RefID, expr: tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type == "query" {
			out = append(out, dashQuery{where: "variable $" + v.Name, expr: v.Definition})
		}
	}
	return out
}

type dashPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"`
}

var (
	promStrings  = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	// label_values(metric, label): the label is not a metric.
	promLabelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)
	promIdent       = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords    = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan", "atan2"}
)

// promqlMetricNames returns the metric names a PromQL expression (with
// Grafana's $variables) selects: what is left once strings, label
// matchers, ranges and grouping clauses are taken out, less function and
// aggregation names (followed by '('), keywords, variables and numbers.
func promqlMetricNames(expr string) []string {
	if m := promLabelValues.FindStringSubmatch(expr); m != nil {
		expr = m[1]
	}
	expr = promStrings.ReplaceAllString(expr, " ")
	expr = promMatchers.ReplaceAllString(expr, " ")
	expr = promRanges.ReplaceAllString(expr, " ")
	expr = promGrouping.ReplaceAllString(expr, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if loc[0] > 0 {
			if c := expr[loc[0]-1]; c == '$' || c == '.' || c >= '0' && c <= '9' {
				continue // a variable, or the exponent of a number
			}
		}
		if rest := strings.TrimLeft(expr[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		if slices.Contains(promKeywords, strings.ToLower(name)) || slices.Contains(names, name) {
			continue
		}
		names = append(names, name)
	}
	return names
}

// TestPromQLMetricNames checks the name extraction the dashboard test
// relies on, and that an unknown name or a counter's _bucket is refused.
func TestPromQLMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (rule, reason) (rate(bridge_rule_errors_total{instance=~"$instance", rule=~"a{b}"}[$__rate_interval]))`, []string{"bridge_rule_errors_total"}},
		{`histogram_quantile(0.95, sum by (le) (rate(x_seconds_bucket[5m])))`, []string{"x_seconds_bucket"}},
		{`sum(rate(a_sum[1m])) / sum(rate(a_count[1m])) * 1e3`, []string{"a_sum", "a_count"}},
		{`a and on (instance) b offset 5m unless c > bool 2`, []string{"a", "b", "c"}},
		{`label_values(bridge_rule_messages_total{instance=~"$instance"}, rule)`, []string{"bridge_rule_messages_total"}},
		{`max without (device) (up)`, []string{"up"}},
	} {
		if got := promqlMetricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.expr, got, tc.want)
		}
	}
	exported := map[string]string{"h": "HISTOGRAM", "c_total": "COUNTER", "s": "SUMMARY"}
	for name, want := range map[string]bool{
		"h": true, "h_bucket": true, "h_count": true, "c_total": true, "s_sum": true,
		"c_total_bucket": false, "s_bucket": false, "bridge_presence_devices": false,
	} {
		if got := isExported(name, exported); got != want {
			t.Errorf("isExported(%s) = %v, want %v", name, got, want)
		}
	}
}
