package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/coap-mqtt/bridge/e2e/peer"
)

// TestFuzzScriptReportsCrash runs e2e/fuzz.sh on a small module holding a
// target that passes and one that crashes once its input grows: the script
// runs both, exits non-zero, and names the failing input go test wrote.
func TestFuzzScriptReportsCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and fuzzes a module")
	}
	gitBin := peer.Require(t, "git")
	bash := peer.Require(t, "bash")
	script, err := os.ReadFile("fuzz.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":      "module example.com/fz\n\ngo 1.22\n",
		"e2e/fuzz.sh": string(script),
		"a/a_test.go": `package a

import "testing"

func FuzzFine(f *testing.F) {
	f.Add([]byte("ok"))
	f.Fuzz(func(t *testing.T, b []byte) {})
}

func FuzzCrash(f *testing.F) {
	f.Add([]byte("ok"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4 {
			panic("input too long")
		}
	})
}
`,
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}} {
		cmd := exec.Command(gitBin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	// A count, not a time: the good target is done in well under a second,
	// so a loaded machine (the race detector's run of the other packages)
	// cannot starve its fuzzing worker into go test's hang detection.
	cmd := exec.Command(bash, filepath.Join(dir, "e2e/fuzz.sh"), "20000x")
	cmd.Env = append(os.Environ(), "FUZZ_LOGDIR="+filepath.Join(dir, "logs"), "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("fuzz.sh exited 0 with a crashing target:\n%s", out)
	}
	if !strings.Contains(string(out), "ok   ./a FuzzFine") {
		t.Errorf("no ok line for FuzzFine:\n%s", out)
	}
	m := regexp.MustCompile(`failing input: (a/testdata/fuzz/FuzzCrash/[0-9a-f]+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no failing input named:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, m[1])); err != nil {
		t.Fatalf("named input missing: %v\n%s", err, out)
	}
}
