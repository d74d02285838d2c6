package rules

import (
	"slices"
	"testing"
)

const learnedWatchRules = `
[[device]]
name = "gh1"
url  = "coap://10.0.0.1"

[[device]]
name = "roamer"                    # no url

[[observe]]
name    = "every"
devices = ["*"]
paths   = ["/temp", "/hum"]
topic   = "t/{device}/{path...}"

[[poll]]
name     = "listed"
devices  = ["gh1", "roamer"]
paths    = ["/battery"]
interval = "1m"
topic    = "b/{device}"
`

// TestLearnedWatches: devices = ["*"] yields watches per learned device,
// with its [[device]] entry when it has one; listed devices, with or
// without url, are ordinary watches.
func TestLearnedWatches(t *testing.T) {
	s := mustLoad(t, learnedWatchRules)
	if !s.HasLearnedWatches() {
		t.Fatal("HasLearnedWatches = false")
	}
	var keys []string
	for _, w := range s.Watches() {
		keys = append(keys, w.Key())
	}
	if want := []string{"gh1 /battery poll listed", "roamer /battery poll listed"}; !slices.Equal(keys, want) {
		t.Errorf("Watches = %q, want %q", keys, want)
	}
	ws := s.LearnedWatches("field-7")
	if len(ws) != 2 || ws[0].Device.Name != "field-7" || ws[0].Device.Host != "" || ws[0].Path != "/temp" || ws[1].Path != "/hum" {
		t.Fatalf("LearnedWatches(field-7) = %+v", ws)
	}
	if ws := s.LearnedWatches("gh1"); len(ws) != 2 || ws[0].Device.Host != "10.0.0.1:5683" {
		t.Fatalf("LearnedWatches(gh1) = %+v, want its [[device]] entry", ws)
	}
}
