package lint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRuleErrorsGoThroughRuleError: the bridge counts a rule error with
// metrics.ruleError, which also enters it in the status page's recent
// errors; a direct bridge_rule_errors_total increment would be missing
// there.
func TestRuleErrorsGoThroughRuleError(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "bridge", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bridge sources: %v", err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || filepath.Base(f) == "recent_errors.go" {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(src), "\n") {
			if strings.Contains(line, "metrics.errors.WithLabelValues(") {
				t.Errorf("%s:%d: counts a rule error directly; use metrics.ruleError so the status page shows it", f, i+1)
			}
		}
	}
}
