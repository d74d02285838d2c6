package e2e

import (
	"fmt"
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
	dir := fuzzModule(t, gitBin)
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

// fuzzModule writes a small git module holding e2e/fuzz.sh and two targets,
// FuzzFine that never fails and FuzzCrash that panics once its input grows
// past four bytes, and returns its directory.
func fuzzModule(t *testing.T, gitBin string) string {
	t.Helper()
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
	return dir
}

// TestFuzzScriptRetriesDeadlineRace runs e2e/fuzz.sh with a go command that
// fails a target the way Go's fuzz coordinator does when its -fuzztime
// deadline races a worker: a bare "context deadline exceeded", no input
// written. Once is retried and passes; every time is a failure.
func TestFuzzScriptRetriesDeadlineRace(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and fuzzes a module")
	}
	gitBin := peer.Require(t, "git")
	bash := peer.Require(t, "bash")
	goBin := peer.Require(t, "go")
	dir := fuzzModule(t, gitBin)
	for _, tc := range []struct {
		name   string
		times  int
		passes bool
	}{{"once", 1, true}, {"always", 1000, false}} {
		t.Run(tc.name, func(t *testing.T) {
			bin := t.TempDir()
			count := filepath.Join(bin, "count")
			wrapper := fmt.Sprintf(`#!/usr/bin/env bash
case " $* " in
*" -fuzz ^FuzzFine\$ "*)
	n=$(cat %[1]q 2>/dev/null || echo 0)
	if [ "$n" -lt %[2]d ]; then
		echo $((n + 1)) >%[1]q
		echo '--- FAIL: FuzzFine (3.01s)'
		echo '    context deadline exceeded'
		echo FAIL
		exit 1
	fi
	;;
esac
exec %[3]q "$@"
`, count, tc.times, goBin)
			if err := os.WriteFile(filepath.Join(bin, "go"), []byte(wrapper), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bash, filepath.Join(dir, "e2e/fuzz.sh"), "2000x", "FuzzFine")
			cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
				"FUZZ_LOGDIR="+filepath.Join(bin, "logs"), "GOFLAGS=")
			out, err := cmd.CombinedOutput()
			if tc.passes {
				if err != nil {
					t.Fatalf("fuzz.sh failed on one deadline race: %v\n%s", err, out)
				}
				if !strings.Contains(string(out), "run twice") {
					t.Errorf("the retry is not reported:\n%s", out)
				}
				return
			}
			if err == nil {
				t.Fatalf("fuzz.sh exited 0 though every run failed:\n%s", out)
			}
			if !strings.Contains(string(out), "FAIL ./a FuzzFine") {
				t.Errorf("no FAIL line for FuzzFine:\n%s", out)
			}
		})
	}
}
