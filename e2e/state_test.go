package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// restart runs the bridge binary again in b's folder (same config, ports
// and state dir) once the previous process has exited, waiting for /readyz.
func (b *bridgeProc) restart(t *testing.T) {
	t.Helper()
	<-b.done
	b.proc = start(t, b.dir, nil, bridgeBin(t), "run")
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", b.httpPort), 20*time.Second)
}

// savedCommands counts the queued commands in a state dir's file (0 if it
// is not there yet).
func savedCommands(t *testing.T, dir string) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "bridge-state.json"))
	if err != nil {
		return 0
	}
	var st struct {
		Commands []json.RawMessage `json:"commands"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("bridge-state.json: %v", err)
	}
	return len(st.Commands)
}

// TestE2EQueuedCommandsSurviveRestart: with `[state] dir`, commands queued
// for a sleeping device when the bridge stops are sent after the next
// bridge on the same ports and state dir starts and the device pushes: all
// of them, in order, once each, each with its ok result and no second
// queued one. SIGTERM saves at shutdown; SIGKILL comes right after the
// tenth queued result: a command is announced queued (and acknowledged to
// the broker) only once the state file holds it, so none is lost.
func TestE2EQueuedCommandsSurviveRestart(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			const n = 10
			state := t.TempDir()
			broker := startMosquitto(t)
			b := startBridgeBin(t, bridgeSetup{rules: natRules, broker: fmt.Sprintf("tcp://127.0.0.1:%d", broker),
				extra: fmt.Sprintf("[devices]\nawake = \"1s\"\npresence_topic = \"devices/{device}/status\"\n[state]\ndir = %q\n", state)})
			sub := startSub(t, broker, "#")
			dev := startNodeDevice(t, b.coapURL("/up/node-8/temp"))
			sub.waitLine(t, 10*time.Second, "devices/node-8/status ", `"state":"asleep"`)

			for i := 1; i <= n; i++ {
				mqttPub(t, broker, "cmd/node-8/led", fmt.Sprintf("c%d", i), "-q", "1")
			}
			testkit.Eventually(t, 10*time.Second, "10 queued results", func() bool {
				return len(sub.statuses("replies/node-8/led")) == n
			})
			if sig == syscall.SIGKILL {
				_ = b.cmd.Process.Kill()
				<-b.done
			} else if code := b.stop(t, 10*time.Second); code != 0 {
				t.Fatalf("bridge exit code %d", code)
			}
			if got := savedCommands(t, state); got != n {
				t.Fatalf("state file holds %d commands after %v, want %d", got, sig, n)
			}
			b.restart(t)
			dev.push(t)
			testkit.Eventually(t, 20*time.Second, "10 ok results", func() bool {
				return len(sub.statuses("replies/node-8/led")) >= 2*n
			})

			var want []string
			for i := 1; i <= n; i++ {
				want = append(want, fmt.Sprintf("command PUT /led c%d", i))
			}
			if lines, _ := dev.commands(t); strings.Join(lines, "\n") != strings.Join(want, "\n") {
				t.Errorf("device carried out\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
			}
			got := sub.statuses("replies/node-8/led")
			wantSt := strings.Repeat("queued,", n) + strings.TrimSuffix(strings.Repeat("ok,", n), ",")
			if strings.Join(got, ",") != wantSt {
				t.Errorf("results %v, want %d queued then %d ok", got, n, n)
			}
			for i, l := range sub.lines("replies/node-8/led ")[n:] {
				if !strings.Contains(l, `"topic":"cmd/node-8/led"`) || !strings.Contains(l, `"code":"2.04"`) {
					t.Errorf("result %d: %s", n+i+1, l)
				}
			}
		})
	}
}
