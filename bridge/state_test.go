package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
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

// TestStateSaveRequestsCoalesce: requests made while a save runs share the
// next save (group commit), every one of them is released once it has
// completed, and the file then holds what each request saw.
func TestStateSaveRequestsCoalesce(t *testing.T) {
	const n = 200
	dir := t.TempDir()
	k := newStateKeeper(dir, slog.New(slog.NewTextHandler(testkit.LogWriter{TB: t}, nil)))
	gate := make(chan struct{})
	var mu sync.Mutex
	saves, cmds := 0, 0 // snapshots taken; commands "in memory"
	k.snap = func() savedState {
		mu.Lock()
		saves++
		first, c := saves == 1, cmds
		mu.Unlock()
		if first {
			<-gate // the first save is slow: the others pile up
		}
		st := savedState{}
		for range c {
			st.Commands = append(st.Commands, savedCommand{Topic: "cmd/d/x"})
		}
		return st
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	mu.Lock()
	cmds = 1
	mu.Unlock()
	first := k.request()
	testkit.Eventually(t, 5*time.Second, "the first save under way", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return saves == 1
	})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		mu.Lock()
		cmds++
		mu.Unlock()
		b := k.request()
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- k.wait(b)
		}()
	}
	select {
	case <-first.done:
		t.Fatal("a request released before its save completed")
	default:
	}
	close(gate)
	if err := k.wait(first); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	got := saves
	mu.Unlock()
	if got != 2 {
		t.Errorf("%d saves for %d requests, want 2 (the one under way and one for all that came meanwhile)", got, n+1)
	}
	st, err := readState(filepath.Join(dir, stateFileName))
	if err != nil || len(st.Commands) != n+1 {
		t.Fatalf("state file holds %d commands (%v), want %d", len(st.Commands), err, n+1)
	}
}

// TestStateSaveFailureCommandsNotQueued: when the state cannot be saved
// (state.dir gone after start), a command for a sleeping device is not
// announced queued as if it would survive a crash: it gets an error
// result naming the state failure, counted as reason "state", and leaves
// the queue. From a remote broker it is not acknowledged: once the
// directory is back, the next bridge with the same client ID gets it
// again from the broker, queues it durably, and the device gets it.
func TestStateSaveFailureCommandsNotQueued(t *testing.T) {
	const n = 3
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	stateDir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", peer.FreeUDPPort(t))
	clientID := fmt.Sprintf("bridge-state-fail-%d", time.Now().UnixNano())
	mod := func(c *Config, o *Options) {
		c.CoAP.Listen = listen
		c.State.Dir = stateDir
		c.Devices.Awake = 500 * time.Millisecond
		useRemoteBroker(c, broker.Addr(), "")
		c.MQTT.ClientID = clientID
	}
	first := startBridge(t, sleepyRules(""), mod)
	replies := subscribe(t, broker.Addr(), "replies/#", 1)
	dev := startSleepyDevice(t, first.CoAPAddr(), "sleepy", time.Second, time.Second, 0)
	dev.waitAsleep(t)

	// The directory goes away (a root process ignores a read-only mode).
	if err := os.RemoveAll(stateDir); err != nil {
		t.Fatal(err)
	}
	publishInOrder(t, broker.Addr(), "cmd/sleepy/n/", n)
	for i := range n {
		m := replies.next(t, 10*time.Second)
		r := decodeResult(t, m.Payload())
		if r.Status != "error" || !strings.Contains(r.Error, "could not save its state") {
			t.Fatalf("result %d on %s: %+v, want an error naming the state", i, m.Topic(), r)
		}
	}
	if got := testutil.ToFloat64(first.metrics.errors.WithLabelValues("down", reasonState)); got != n {
		t.Errorf("bridge_rule_errors_total{reason=state} = %v, want %d", got, n)
	}
	if depth := testutil.ToFloat64(first.metrics.queueDepth); depth != 0 {
		t.Errorf("%v commands still queued after their error, want 0", depth)
	}
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	first.stop(t)

	startBridge(t, sleepyRules(""), mod)
	for i := range n {
		m := replies.next(t, 10*time.Second)
		if r := decodeResult(t, m.Payload()); r.Status != "queued" {
			t.Fatalf("redelivered command %d on %s: %+v, want queued", i, m.Topic(), r)
		}
	}
	dev.wakeCycle()
	for range n {
		m := replies.next(t, 10*time.Second)
		if r := decodeResult(t, m.Payload()); r.Status != "ok" {
			t.Fatalf("result on %s: %+v, want ok", m.Topic(), r)
		}
	}
	var paths []string
	for _, d := range dev.requests() {
		paths = append(paths, d.path)
	}
	if !slices.Equal(paths, []string{"/n/0", "/n/1", "/n/2"}) {
		t.Fatalf("the device got %v", paths)
	}
}
