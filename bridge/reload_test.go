package bridge

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func (tb *testBridge) writeRules(t *testing.T, text string) {
	t.Helper()
	// Write then rename, as editors do, so the watcher sees one complete file.
	tmp := filepath.Join(tb.dir, ".rules.tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(tb.dir, "rules.toml")); err != nil {
		t.Fatal(err)
	}
}

func (tb *testBridge) watchRun(key string) *watchRun {
	tb.watches.mu.Lock()
	defer tb.watches.mu.Unlock()
	return tb.watches.running[key]
}

// TestReloadAppliesOnlyTheDifference edits the rule file while a poll rule
// runs and ingress traffic flows: the new rule starts working, the
// unchanged poll keeps its goroutine, and no ingress message is lost or
// duplicated.
func TestReloadAppliesOnlyTheDifference(t *testing.T) {
	dev := startDevice(t, "")
	var n atomic.Int64
	dev.mux.HandleFunc("GET /v", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.Write([]byte(fmt.Sprint(n.Add(1))))
	})
	base := fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[poll]]
name     = "v"
devices  = ["d1"]
paths    = ["/v"]
interval = "100ms"
topic    = "v/{device}"

[[ingress]]
name    = "telemetry"
path    = "/t/{device}"
methods = ["POST"]
topic   = "t/{device}"
qos     = 1
`, dev.addr)
	tb := startBridge(t, base, nil)
	tsub := subscribe(t, tb.MQTTAddr(), "t/#", 1)
	c := newCoAPClient(t)
	var key string
	eventually(t, 5*time.Second, "poll running", func() bool {
		tb.watches.mu.Lock()
		defer tb.watches.mu.Unlock()
		for k := range tb.watches.running {
			key = k
		}
		return key != ""
	})
	before := tb.watchRun(key)

	// Traffic flows while the file changes.
	sent := make(chan int, 1)
	go func() {
		i := 0
		for ; i < 40; i++ {
			resp, err := c.Post(t.Context(), tb.coapURL("/t/d1"), message.TextPlain, []byte(fmt.Sprint(i)))
			if err != nil || resp.Code != message.Changed {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		sent <- i
	}()
	tb.writeRules(t, base+`
[[ingress]]
name    = "new"
path    = "/new/{device}"
methods = ["POST"]
topic   = "new/{device}"
`)
	eventually(t, 5*time.Second, "reload", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues("ok")) >= 1
	})
	resp, err := c.Post(t.Context(), tb.coapURL("/new/d1"), message.TextPlain, []byte("x"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("new rule after reload: %v %v", resp, err)
	}
	if after := tb.watchRun(key); after != before {
		t.Fatal("unchanged poll was restarted by the reload")
	}
	total := <-sent
	if total != 40 {
		t.Fatalf("only %d of 40 ingress requests accepted during reload", total)
	}
	seen := map[string]int{}
	for i := 0; i < total; i++ {
		seen[string(tsub.next(t, 5*time.Second).Payload())]++
	}
	tsub.none(t, 200*time.Millisecond)
	for i := 0; i < total; i++ {
		if seen[fmt.Sprint(i)] != 1 {
			t.Fatalf("message %d delivered %d times", i, seen[fmt.Sprint(i)])
		}
	}
}

func TestReloadRejectsBadEditAndKeepsRunning(t *testing.T) {
	tb := startBridge(t, ingressRules, nil)
	tb.writeRules(t, ingressRules+"\n[[ingress]]\nname = \"broken\"\npath = \"/b/{x}\"\ntopik = \"b\"\n")
	eventually(t, 5*time.Second, "rejected reload", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues("error")) >= 1
	})
	c := newCoAPClient(t)
	resp, err := c.Post(t.Context(), tb.coapURL("/telemetry/d/m"), message.TextPlain, []byte("1"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("old rules after a bad edit: %v %v", resp, err)
	}
	// TriggerReload (SIGHUP) on a fixed file applies it.
	tb.writeRules(t, resourceRules)
	tb.TriggerReload()
	eventually(t, 5*time.Second, "good reload", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues("ok")) >= 1
	})
	eventually(t, 5*time.Second, "old rule gone", func() bool {
		resp, err := c.Post(t.Context(), tb.coapURL("/telemetry/d/m"), message.TextPlain, []byte("1"))
		return err == nil && resp.Code == message.NotFound
	})
}
