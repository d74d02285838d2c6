package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// saveInPlace rewrites name as an editor that does not rename does:
// truncate, wait, then write in chunks.
func saveInPlace(t *testing.T, name, text string, truncatedFor time.Duration) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	time.Sleep(truncatedFor) // the writer's pace, not synchronisation
	n := len(text)/3 + 1
	for i := 0; i < len(text); i += n {
		if _, err := f.WriteString(text[i:min(i+n, len(text))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestE2ERuleFileSavedInPlace saves the rule file in place 20 times while
// coap-client keeps posting; every fifth save stays truncated for longer
// than the bridge waits for a file to settle. No post may find the rules
// gone, and the saves are applied.
func TestE2ERuleFileSavedInPlace(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	b := startBridgeBin(t, bridgeSetup{rules: ingressRule})
	var posts, notFound, failed atomic.Int64
	var lastFailure atomic.Value
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			out, err := exec.CommandContext(pctx, client, "-m", "post", "-e", "1", b.coapURL("/telemetry/d/m")).CombinedOutput()
			cancel()
			switch {
			case ctx.Err() != nil:
			case strings.Contains(string(out), "4.04"):
				notFound.Add(1)
			case err != nil:
				failed.Add(1)
				lastFailure.Store(fmt.Sprintf("%v: %s", err, out))
			default:
				posts.Add(1)
			}
			time.Sleep(5 * time.Millisecond) // a device's pace
		}
	}()
	defer func() { stop(); <-done }()
	name := filepath.Join(b.dir, "rules", "e2e.toml")
	for round := 0; round < 4; round++ {
		text := ingressRule + fmt.Sprintf("\n[[ingress]]\nname = \"r%d\"\npath = \"/r%d\"\ntopic = \"r\"\n", round, round)
		for i := 0; i < 5; i++ {
			pause := 2 * time.Millisecond
			if i == 0 {
				pause = 700 * time.Millisecond
			}
			saveInPlace(t, name, text, pause)
		}
		testkit.Eventually(t, 20*time.Second, fmt.Sprintf("round %d applied", round), func() bool {
			out, _ := run(t, 20*time.Second, ".", client, "-m", "post", "-e", "x", b.coapURL(fmt.Sprintf("/r%d", round)))
			return !strings.Contains(out, "4.04")
		})
	}
	stop()
	<-done
	t.Logf("posts during 20 in-place saves: %d answered, %d got 4.04, %d failed", posts.Load(), notFound.Load(), failed.Load())
	if notFound.Load() != 0 || failed.Load() != 0 || posts.Load() == 0 {
		t.Fatalf("%d of %d posts got 4.04 and %d failed (last: %v)", notFound.Load(), posts.Load()+notFound.Load()+failed.Load(), failed.Load(), lastFailure.Load())
	}
}

// TestE2ESIGHUPAppliesAnEditTheWatcherCannotSee: the rule file is a
// symbolic link into a folder the bridge does not watch (as configuration
// mounts often are); an edit there takes effect on SIGHUP.
func TestE2ESIGHUPAppliesAnEditTheWatcherCannotSee(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	b := startBridgeBin(t, bridgeSetup{rules: ingressRule})
	real := filepath.Join(b.dir, "real", "e2e.toml")
	if err := os.Mkdir(filepath.Dir(real), 0o755); err != nil {
		t.Fatal(err)
	}
	alerts := ingressRule + "\n[[ingress]]\nname = \"alerts\"\npath = \"/alerts/{device}\"\ntopic = \"alerts/{device}\"\n"
	writeTestFile(t, real, alerts)
	link := filepath.Join(b.dir, "rules", ".link.tmp")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	// Renaming the link into place is an event in the watched folder.
	if err := os.Rename(link, filepath.Join(b.dir, "rules", "e2e.toml")); err != nil {
		t.Fatal(err)
	}
	posts := func(path string) bool {
		out, _ := run(t, 20*time.Second, ".", client, "-m", "post", "-e", "x", b.coapURL(path))
		return !strings.Contains(out, "4.04")
	}
	testkit.Eventually(t, 20*time.Second, "rules through the link applied", func() bool { return posts("/alerts/d") })

	// An edit behind the link makes no event the bridge watches.
	tmp := real + ".tmp"
	writeTestFile(t, tmp, alerts+"\n[[ingress]]\nname = \"late\"\npath = \"/late\"\ntopic = \"late\"\n")
	if err := os.Rename(tmp, real); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // longer than a watched edit takes to apply
	if posts("/late") {
		t.Fatal("the edit behind the link was applied without SIGHUP: the test no longer shows what SIGHUP does")
	}
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "edit applied on SIGHUP", func() bool { return posts("/late") })
}
