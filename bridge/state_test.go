package bridge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStateFileRoundTrip: a saved state reads back as written, the file
// is replaced whole (no temporary file is left), and a missing file is an
// empty state.
func TestStateFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, stateFileName)
	if st, err := readState(path); err != nil || len(st.Devices)+len(st.Commands) != 0 {
		t.Fatalf("missing file: %+v %v", st, err)
	}
	seen := time.Date(2026, 12, 5, 7, 0, 0, 0, time.UTC)
	for i := range 2 {
		want := savedState{
			Devices:  []savedDevice{{Name: "d", Addr: "127.0.0.1:5683", LastSeen: seen}},
			Commands: []savedCommand{{Topic: "cmd/d/x", Payload: []byte{0, 1, byte(i)}, QoS: 1, CorrelationData: []byte("c"), Received: seen, Expires: seen.Add(time.Minute)}},
		}
		if err := writeState(path, want); err != nil {
			t.Fatal(err)
		}
		got, err := readState(path)
		if err != nil || len(got.Devices) != 1 || got.Devices[0] != want.Devices[0] || len(got.Commands) != 1 ||
			string(got.Commands[0].Payload) != string(want.Commands[0].Payload) || !got.Commands[0].Expires.Equal(want.Commands[0].Expires) {
			t.Fatalf("read back %+v, %v; want %+v", got, err, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("state dir holds %d files, want only the state file", len(entries))
	}
}

// TestStateUnreadableFileSetAside: a state file the bridge cannot read
// is renamed *.bad and the bridge starts without it.
func TestStateUnreadableFileSetAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, stateFileName)
	if err := os.WriteFile(path, []byte(`{"version":1,"devices":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, sleepyRules(""), func(c *Config, _ *Options) { c.State.Dir = dir })
	if _, err := os.Stat(path + ".bad"); err != nil {
		t.Fatalf("unreadable state file not set aside: %v", err)
	}
	if n := tb.learned.len(); n != 0 {
		t.Fatalf("%d devices from an unreadable file", n)
	}
	found := false
	for _, m := range tb.warnings.logged() {
		found = found || containsAll(m, "state not restored", ".bad")
	}
	if !found {
		t.Errorf("no warning about the state file: %v", tb.warnings.logged())
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
