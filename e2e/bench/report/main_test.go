package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestTableMedianAndRatios: the median run by rate is reported, with
// ratios to the bare server and libcoap from the same input.
func TestTableMedianAndRatios(t *testing.T) {
	in := `coapside bare server	{"request":{"rate_per_s":1000,"p50_ms":1},"processes":[{"cpu_us_per_msg":5}]}
libcoap coap-server	{"request":{"rate_per_s":500,"p50_ms":2},"processes":[{"cpu_us_per_msg":4}]}
bridge + embedded, QoS 1	{"request":{"rate_per_s":900},"end_to_end":{"rate_per_s":100,"p50_ms":9},"lost":1,"loss_percent":0.5,"processes":[{"cpu_us_per_msg":20}]}
bridge + embedded, QoS 1	{"request":{"rate_per_s":900},"end_to_end":{"rate_per_s":300,"p50_ms":7},"processes":[{"cpu_us_per_msg":10},{"cpu_us_per_msg":2}]}
bridge + embedded, QoS 1	{"request":{"rate_per_s":900},"end_to_end":{"rate_per_s":200,"p50_ms":8},"processes":[{"cpu_us_per_msg":16}]}
`
	scs, err := parseRuns(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	writeTable(&out, scs)
	want := []string{
		"| coapside bare server | 1 | 1000 | 1.00 |",
		"| libcoap coap-server | 1 | 500 | 2.00 |",
		// The median of 100, 300 and 200 end to end is the 200 run: 0.20
		// of the bare server, 0.40 of libcoap, 16 / 4 µs of CPU.
		"| bridge + embedded, QoS 1 | 3 | 200 | 8.00 | 0.00 | 0.00 | 900 | 0 (0.00 %) | 0.20 | 0.40 | 0 | 16 | 4.0 | 0 |",
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, out.String())
		}
	}
	if _, err := parseRuns(strings.NewReader("no tab here\n")); err == nil {
		t.Error("a line without a scenario accepted")
	}
}
