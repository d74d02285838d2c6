package bridge

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
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
	testkit.Eventually(t, 5*time.Second, "poll running", func() bool {
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
	testkit.Eventually(t, 5*time.Second, "reload", func() bool {
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
	testkit.Eventually(t, 5*time.Second, "rejected reload", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues("error")) >= 1
	})
	c := newCoAPClient(t)
	resp, err := c.Post(t.Context(), tb.coapURL("/telemetry/d/m"), message.TextPlain, []byte("1"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("old rules after a bad edit: %v %v", resp, err)
	}
	// The fixed file is applied.
	tb.writeRules(t, resourceRules)
	testkit.Eventually(t, 5*time.Second, "good reload", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadOK)) >= 1
	})
	testkit.Eventually(t, 5*time.Second, "old rule gone", func() bool {
		resp, err := c.Post(t.Context(), tb.coapURL("/telemetry/d/m"), message.TextPlain, []byte("1"))
		return err == nil && resp.Code == message.NotFound
	})
}

// unwatched runs a bridge that does not watch its rule files: only
// TriggerReload (SIGHUP) and the recheck after a rejected reload read them.
func unwatched(_ *Config, o *Options) {
	o.noFileWatch = true
	o.ReloadSettle = 50 * time.Millisecond
}

// pushOK posts to url and fails the test unless it is answered 2.04.
func pushOK(t *testing.T, c *coapside.Client, url string) {
	t.Helper()
	if code := post(t, c, url); code != message.Changed {
		t.Fatalf("POST %s: %v, want 2.04", url, code)
	}
}

// post sends a text POST and returns the response code, or fails the test.
func post(t *testing.T, c *coapside.Client, url string) message.Code {
	t.Helper()
	resp, err := c.Post(t.Context(), url, message.TextPlain, []byte("1"))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp.Code
}

// TestReloadSignalAppliesAnUnwatchedEdit: with no file watcher, an edit
// takes effect only because TriggerReload (what SIGHUP calls) reloads.
func TestReloadSignalAppliesAnUnwatchedEdit(t *testing.T) {
	tb := startBridge(t, ingressRules, unwatched)
	c := newCoAPClient(t)
	tb.writeRules(t, resourceRules)
	tb.TriggerReload()
	testkit.Eventually(t, 5*time.Second, "reload on signal", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadOK)) >= 1
	})
	if code := post(t, c, tb.coapURL("/telemetry/d/m")); code != message.NotFound {
		t.Fatalf("rule removed by the signalled reload answered %v, want 4.04", code)
	}
}

// TestReloadRetriesAHalfWrittenFile: a reload that read a half written
// file is rejected; once the file is complete it is applied without
// another signal or file event.
func TestReloadRetriesAHalfWrittenFile(t *testing.T) {
	tb := startBridge(t, ingressRules, unwatched)
	c := newCoAPClient(t)
	full := ingressRules + "\n[[ingress]]\nname = \"late\"\npath = \"/late\"\ntopic = \"late\"\n"
	tb.writeRules(t, full[:len(full)-20])
	tb.TriggerReload()
	testkit.Eventually(t, 5*time.Second, "half written file rejected", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadError)) >= 1
	})
	tb.writeRules(t, full) // no watcher and no signal: only the recheck sees this
	testkit.Eventually(t, 5*time.Second, "completed file applied", func() bool {
		return post(t, c, tb.coapURL("/late")) == message.Changed
	})
}

// TestReloadRefusesAnEmptiedFile: a rule file that becomes empty does not
// remove its rules; one that says so with a comment does.
func TestReloadRefusesAnEmptiedFile(t *testing.T) {
	tb := startBridge(t, ingressRules, func(_ *Config, o *Options) { o.ReloadSettle = 50 * time.Millisecond })
	c := newCoAPClient(t)
	tb.writeRules(t, " \n\n")
	testkit.Eventually(t, 5*time.Second, "reload after the edit", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadOK))+testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadRefused)) >= 1
	})
	if code := post(t, c, tb.coapURL("/telemetry/d/m")); code != message.Changed {
		t.Fatalf("rule of an emptied file answered %v, want 2.04", code)
	}
	tb.writeRules(t, "# every rule removed on purpose\n")
	testkit.Eventually(t, 5*time.Second, "comment-only file applied", func() bool {
		return post(t, c, tb.coapURL("/telemetry/d/m")) == message.NotFound
	})
	if got := testutil.ToFloat64(tb.metrics.rulesLoaded); got != 0 {
		t.Fatalf("rules loaded %v, want 0", got)
	}
}

// TestReloadInPlaceSavesKeepRules saves the rule file in place (truncate,
// then write in chunks) 100 times while a device posts without pause. The
// first save of every ten pauses after truncating for longer than the
// settle time, as a slow writer does; no post may find the rules gone, and
// the last save of each ten is applied.
func TestReloadInPlaceSavesKeepRules(t *testing.T) {
	const settle = 50 * time.Millisecond
	tb := startBridge(t, ingressRules, func(_ *Config, o *Options) { o.ReloadSettle = settle })
	c := newCoAPClient(t)
	var ok, notFound, other atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			resp, err := c.Post(t.Context(), tb.coapURL("/telemetry/d/m"), message.TextPlain, []byte("1"))
			switch {
			case err == nil && resp.Code == message.Changed:
				ok.Add(1)
			case err == nil && resp.Code == message.NotFound:
				notFound.Add(1)
			default:
				other.Add(1)
			}
		}
	}()
	name := filepath.Join(tb.dir, "rules.toml")
	save := func(text string, truncatedFor time.Duration) {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		time.Sleep(truncatedFor) // the writer's pace, not synchronisation
		const chunks = 4
		n := len(text)/chunks + 1
		for i := 0; i < len(text); i += n {
			if _, err := f.WriteString(text[i:min(i+n, len(text))]); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	c2 := newCoAPClient(t)
	for round := 0; round < 10; round++ {
		text := ingressRules + fmt.Sprintf("\n[[ingress]]\nname = \"r%d\"\npath = \"/r%d\"\ntopic = \"r\"\n", round, round)
		for i := 0; i < 10; i++ {
			pause := 2 * time.Millisecond
			if i == 0 {
				pause = 300 * time.Millisecond // longer than the settle time and the old debounce
			}
			save(text, pause)
		}
		testkit.Eventually(t, 5*time.Second, fmt.Sprintf("round %d applied", round), func() bool {
			return post(t, c2, tb.coapURL(fmt.Sprintf("/r%d", round))) == message.Changed
		})
	}
	close(stop)
	<-done
	t.Logf("posts: %d answered 2.04, %d 4.04, %d other; reloads ok %v, refused %v, error %v", ok.Load(), notFound.Load(), other.Load(),
		testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadOK)),
		testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadRefused)),
		testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadError)))
	if notFound.Load() != 0 || other.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("during 100 in-place saves: %d posts answered 4.04 and %d failed otherwise (%d 2.04)", notFound.Load(), other.Load(), ok.Load())
	}
}

// TestReloadFollowsAConfigMapSwap: a Kubernetes ConfigMap volume updates
// its files by pointing the ..data link at a new folder; the rule file is
// a link through ..data and never changes itself. The swap is a change of
// the rule file.
func TestReloadFollowsAConfigMapSwap(t *testing.T) {
	configMap := func(dir, version, rules string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, version), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, version, "rules.toml"), []byte(rules), 0o644); err != nil {
			t.Fatal(err)
		}
		// The kubelet's atomic writer: a new link renamed over ..data.
		if err := os.Symlink(version, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	tb := startBridge(t, ingressRules, func(c *Config, o *Options) {
		o.ReloadSettle = 50 * time.Millisecond
		dir := filepath.Dir(c.File)
		configMap(dir, "..2026_12_05_a", ingressRules)
		rules := filepath.Join(dir, "rules.toml")
		if err := os.Remove(rules); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", "rules.toml"), rules); err != nil {
			t.Fatal(err)
		}
	})
	c := newCoAPClient(t)
	if code := post(t, c, tb.coapURL("/telemetry/d/m")); code != message.Changed {
		t.Fatalf("push before the swap answered %v, want 2.04", code)
	}
	configMap(tb.dir, "..2026_12_05_b", resourceRules)
	testkit.Eventually(t, 5*time.Second, "reload after the ConfigMap swap", func() bool {
		return post(t, c, tb.coapURL("/telemetry/d/m")) == message.NotFound
	})
}

// TestReloadAppliesAnEditedAuthFile: the embedded broker's auth_file is
// reloaded with the rules: a user added to it can connect without a
// restart; a file that does not load keeps the users and counts the
// reload as an error.
func TestReloadAppliesAnEditedAuthFile(t *testing.T) {
	authFile := filepath.Join(t.TempDir(), "auth.toml")
	user := func(name, pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("[[user]]\nname = %q\npassword = %q\npublish = [\"x/#\"]\n\n", name, h)
	}
	if err := os.WriteFile(authFile, []byte(user("alice", "alice-pw")), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, ingressRules, func(c *Config, o *Options) {
		c.MQTT.Embedded.AuthFile = authFile
		o.ReloadSettle = 50 * time.Millisecond
	})
	connect := func(name, pw string) error {
		o := paho.NewClientOptions().AddBroker("tcp://" + tb.MQTTAddr()).SetClientID(name + "-" + fmt.Sprint(time.Now().UnixNano())).
			SetUsername(name).SetPassword(pw).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
		c := paho.NewClient(o)
		tok := c.Connect()
		tok.WaitTimeout(5 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(50)
		}
		return tok.Error()
	}
	if err := connect("bob", "bob-pw"); err == nil {
		t.Fatal("bob connected before he was added")
	}
	if err := os.WriteFile(authFile, []byte(user("alice", "alice-pw")+user("bob", "bob-pw")), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "bob let in after the reload", func() bool { return connect("bob", "bob-pw") == nil })

	if err := os.WriteFile(authFile, []byte("[[user]]\nname = \"bob\"\npassword = \"plain\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the bad auth file counted", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadError)) >= 1
	})
	if err := connect("bob", "bob-pw"); err != nil {
		t.Fatalf("bob after a rejected auth file: %v", err)
	}
}

// TestReloadFollowsARuleFolderSwap: a deployment that replaces the rule
// folder (a new folder renamed over the old one's name) is a change of the
// rule files, and the files of the new folder are watched from then on.
func TestReloadFollowsARuleFolderSwap(t *testing.T) {
	writeFolder := func(dir, rules string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, ".a.tmp")
		if err := os.WriteFile(tmp, []byte(rules), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "a.toml")); err != nil {
			t.Fatal(err)
		}
	}
	tb := startBridge(t, ingressRules, func(c *Config, o *Options) {
		o.ReloadSettle = 50 * time.Millisecond
		c.Rules = []string{"rules/*.toml"}
		writeFolder(filepath.Join(filepath.Dir(c.File), "rules"), ingressRules)
	})
	c := newCoAPClient(t)
	pushOK(t, c, tb.coapURL("/telemetry/d/m"))

	rules := filepath.Join(tb.dir, "rules")
	writeFolder(filepath.Join(tb.dir, "rules.new"), resourceRules)
	if err := os.Rename(rules, filepath.Join(tb.dir, "rules.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(tb.dir, "rules.new"), rules); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "reload after the folder swap", func() bool {
		return post(t, c, tb.coapURL("/telemetry/d/m")) == message.NotFound
	})

	writeFolder(rules, ingressRules) // an edit in the new folder
	testkit.Eventually(t, 5*time.Second, "reload after an edit in the new folder", func() bool {
		return post(t, c, tb.coapURL("/telemetry/d/m")) == message.Changed
	})
}

// TestReloadWarnsOfAGlobMatchingNoFile: a reload that finds no file for a
// rule glob (its folder moved away, say) removes that glob's rules, as at
// the start the bridge warns that the glob matches nothing.
func TestReloadWarnsOfAGlobMatchingNoFile(t *testing.T) {
	tb := startBridge(t, ingressRules, func(c *Config, o *Options) {
		unwatched(c, o)
		c.Rules = []string{"*.toml"}
	})
	if err := os.Rename(filepath.Join(tb.dir, "rules.toml"), filepath.Join(tb.dir, "rules.bak")); err != nil {
		t.Fatal(err)
	}
	tb.TriggerReload()
	testkit.Eventually(t, 5*time.Second, "reload", func() bool {
		return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadOK)) >= 1
	})
	warned := false
	for _, w := range tb.warnings.logged() {
		warned = warned || strings.Contains(w, `"*.toml" matches no file`)
	}
	if !warned {
		t.Errorf("no warning about the glob matching no file: %q", tb.warnings.logged())
	}
}

// TestReloadOncePerBrokenEdit: after a rejected reload the bridge both
// watches the files and reads them again every few settle times; an edit
// that both see is reloaded, rejected and counted once, not twice.
func TestReloadOncePerBrokenEdit(t *testing.T) {
	const settle = 50 * time.Millisecond
	tb := startBridge(t, ingressRules, func(_ *Config, o *Options) { o.ReloadSettle = settle })
	const edits = 8
	for i := range edits {
		tb.writeRules(t, fmt.Sprintf("%s\n[[ingress]]\nname = \"broken\"\npath = \"/b/{x}\"\ntopik = \"b%d\"\n", ingressRules, i))
		testkit.Eventually(t, 5*time.Second, "rejected reload", func() bool {
			return testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadError)) >= float64(i+1)
		})
		// Past a recheck and a second reload if one follows; the next edit
		// comes at another moment of the recheck's period.
		time.Sleep(6*settle + time.Duration(i)*settle/2)
	}
	if got := testutil.ToFloat64(tb.metrics.reloads.WithLabelValues(reloadError)); got != edits {
		t.Errorf("%d broken edits counted as %v rejected reloads", edits, got)
	}
}
