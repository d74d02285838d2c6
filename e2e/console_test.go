package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// Environment of the browser test.
const (
	// artifactsEnv names a folder the screenshot is written to (default:
	// the test's temporary folder).
	artifactsEnv = "BRIDGE_ARTIFACTS"
	// screenshotEnv, set to 1, also copies the screenshot to
	// docs/console.png, the README's picture.
	screenshotEnv = "BRIDGE_UPDATE_SCREENSHOT"
)

// xssName is a device name that is markup: the page must show it as text.
const xssName = `<img src=x onerror="window.__xss=1">`

// chromium returns the path of Debian's chromium (or another Chromium
// build on PATH); the test skips without it, or fails with
// BRIDGE_E2E_STRICT=1.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return peer.Require(t, "chromium")
}

// browser starts headless Chromium and returns a tab; both end at cleanup.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // runs as root in CI containers
		chromedp.WindowSize(1280, 1000),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("hide-scrollbars", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit
	})
	if err := chromedp.Do(ctx); err != nil {
		peer.Unavailable(t, "chromium does not start: %v", err)
	}
	return ctx
}

// TestE2EConsoleInBrowser drives the status page in headless Chromium
// against the bridge binary fed by `bridge sim` devices and libcoap's
// coap-client: the page lists the devices and rule counters; a reading
// pushed while it is open moves its rule counter and the device's last
// seen time without a reload; a stopped device turns offline; a device
// named like markup is shown as text and runs nothing; a rule file that
// does not load is announced until it is fixed. A screenshot is saved as
// an artifact and checked not to be blank.
func TestE2EConsoleInBrowser(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	ctx := browser(t)

	meterPort := freeUDPRange(t, 1)
	rules := fmt.Sprintf(`
[[ingress]]
name    = "uplink"
path    = "/up/{device}/{metric}"
methods = ["POST"]
topic   = "up/{device}/{metric}"

[[ingress]]
name    = "manual"
path    = "/manual/{device}/{metric}"
methods = ["POST"]
topic   = "manual/{device}/{metric}"

[[ingress]]
name    = "json"
path    = "/json/{device}"
methods = ["POST"]
topic   = "json/{device}"
payload = "json"

[[device]]
name = "meter-0"
url  = "coap://127.0.0.1:%d"

[[observe]]
name    = "meter-temp"
devices = ["meter-0"]
paths   = ["/sensors/temp"]
topic   = "meters/{device}/temp"
`, meterPort)
	b := startBridgeBin(t, bridgeSetup{rules: rules,
		extra: "[devices]\npresence_topic = \"devices/{device}/status\"\nawake = \"1s\"\noffline_after = \"3s\"\n"})
	base := fmt.Sprintf("http://127.0.0.1:%d", b.httpPort)

	start(t, ".", nil, bridgeBin(t), "sim", "--devices", "1", "--name-prefix", "meter-",
		"--base-port", strconv.Itoa(meterPort), "--listen-host", "127.0.0.1", "--interval", "1s")
	fieldPort := freeUDPRange(t, 3)
	field := start(t, ".", nil, bridgeBin(t), "sim", "--devices", "3", "--name-prefix", "field-",
		"--base-port", strconv.Itoa(fieldPort), "--listen-host", "127.0.0.1", "--interval", "500ms",
		"--push", fmt.Sprintf("coap://127.0.0.1:%d/up/{device}/{metric}", b.coapPort))
	push := func(device, value string) {
		t.Helper()
		u := fmt.Sprintf("coap://127.0.0.1:%d/manual/%s/temp", b.coapPort, url.PathEscape(device))
		if out, code := run(t, 20*time.Second, ".", client, "-m", "post", "-t", "text/plain", "-e", value, u); code != 0 {
			t.Fatalf("coap-client %s: exit %d: %s", u, code, out)
		}
	}
	push(xssName, "1")
	push("probe-1", "20.5")

	// text evaluates expr, a string, in the page.
	text := func(expr string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return s
	}
	ruleCount := func(rule string) int {
		n, _ := strconv.Atoi(text(fmt.Sprintf(`(document.querySelector('tr[data-rule=%q] td.messages')||{}).textContent||""`, rule)))
		return n
	}
	deviceCell := func(device, cell string) string {
		return text(fmt.Sprintf(`(() => { for (const tr of document.querySelectorAll('#devices tbody tr')) {
			if (tr.dataset.device === %q) { const td = tr.querySelector(%q); return td ? (td.dataset.ts || td.dataset.state || td.textContent) : ""; } }
			return ""; })()`, device, "td."+cell))
	}

	ctx2, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx2, chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-rule="uplink"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-device="field-2"]`)),
	); err != nil {
		t.Fatalf("page did not show rules and devices: %v", err)
	}
	// The device list and the counters, live.
	testkit.Eventually(t, 20*time.Second, "three field devices online, uplink counting", func() bool {
		return deviceCell("field-0", "state") == "online" && deviceCell("field-1", "state") == "online" &&
			deviceCell("field-2", "state") == "online" && ruleCount("uplink") >= 9
	})
	testkit.Eventually(t, 20*time.Second, "meter-0 observed", func() bool {
		return deviceCell("meter-0", "state") == "online" && ruleCount("meter-temp") >= 1
	})

	// A device named like markup is text.
	type shown struct {
		Name   string `json:"name"`
		Images int    `json:"images"`
		Ran    bool   `json:"ran"`
	}
	xss, err := chromedp.Run(ctx, chromedp.Evaluate[shown](`(() => { let name = ""; for (const tr of document.querySelectorAll('#devices tbody tr'))
		if (tr.dataset.device.startsWith("<img")) name = tr.querySelector("td.name").textContent;
		return {name, images: document.querySelectorAll("img").length, ran: window.__xss === 1}; })()`))
	if err != nil {
		t.Fatal(err)
	}
	if xss.Name != xssName || xss.Images != 0 || xss.Ran {
		t.Fatalf("device named %q: shown as %q, %d <img> in the page, script ran: %v", xssName, xss.Name, xss.Images, xss.Ran)
	}

	// A reading pushed while the page is open moves the counter and the
	// device's last seen time, without a reload.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.__notReloaded = true`)); err != nil {
		t.Fatal(err)
	}
	count, seen := ruleCount("manual"), deviceCell("probe-1", "last-seen")
	if count != 2 || seen == "" {
		t.Fatalf("before the push: manual counter %d, probe-1 last seen %q", count, seen)
	}
	time.Sleep(10 * time.Millisecond) // a later reading has a later time
	push("probe-1", "21.5")
	before, err := time.Parse(time.RFC3339Nano, seen)
	if err != nil {
		t.Fatalf("probe-1 last seen %q: %v", seen, err)
	}
	testkit.Eventually(t, 10*time.Second, "manual counter 3 and probe-1 seen again", func() bool {
		after, err := time.Parse(time.RFC3339Nano, deviceCell("probe-1", "last-seen"))
		return ruleCount("manual") == 3 && err == nil && after.After(before)
	})

	// A refused reading is in the recent errors, with its rule, device,
	// reason and the CoAP code answered.
	u := fmt.Sprintf("coap://127.0.0.1:%d/json/probe-1", b.coapPort)
	if out, _ := run(t, 20*time.Second, ".", client, "-m", "post", "-t", "application/json", "-e", "{not json", u); !strings.Contains(out, "4.15") {
		t.Fatalf("POST of bad JSON: %q, want 4.15", out)
	}
	var shownErrors string
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Newest first. Other errors may be older: an observation tried
		// before its device was up (unreachable).
		shownErrors = text(`Array.from(document.querySelectorAll('#errors tbody tr'), tr => Array.from(tr.cells, td => td.textContent).slice(1, 5).join("|")).join("\n")`)
		if first, _, _ := strings.Cut(shownErrors, "\n"); first == "json|probe-1|convert|4.15" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recent errors on the page %q, want the refused reading first: json|probe-1|convert|4.15", shownErrors)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ruleErrors := text(`document.querySelector('tr[data-rule="json"] td.errors').textContent`); ruleErrors != "1" {
		t.Fatalf("json rule errors %q, want 1 (recent errors %q)", ruleErrors, shownErrors)
	}

	// Screenshot, with every part of the page filled in.
	shot := screenshot(t, ctx)

	// Search, on the server: only the matching devices are listed.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`(() => { const q = document.getElementById("q");
		q.value = "FIELD-"; q.dispatchEvent(new Event("input")); })()`)); err != nil {
		t.Fatal(err)
	}
	listed := func() string {
		return text(`Array.from(document.querySelectorAll('#devices tbody tr'), tr => tr.dataset.device).join(",") + " " + document.getElementById("page").textContent`)
	}
	testkit.Eventually(t, 10*time.Second, "search lists the field devices", func() bool { return listed() == "field-0,field-1,field-2 1–3 of 3" })

	// A stopped device goes offline.
	field.stop(t, 10*time.Second)
	testkit.Eventually(t, 20*time.Second, "field devices offline", func() bool {
		return deviceCell("field-0", "state") == "offline" && deviceCell("field-2", "state") == "offline"
	})
	// A rule file that does not load: a banner says the edit is not
	// applied, with the problem at its file:line, until it is fixed.
	b.writeRules(t, rules+"\n[[ingress]]\nname = \"broken\"\npath = \"/broken\"\ntopik = \"broken\"\n")
	banner := func() string {
		return text(`(() => { const r = document.getElementById("reload"); return r.hidden ? "" : r.textContent; })()`)
	}
	testkit.Eventually(t, 20*time.Second, "banner of the rejected reload", func() bool {
		return strings.Contains(banner(), `e2e.toml:`) && strings.Contains(banner(), `unknown key "topik"`)
	})
	b.writeRules(t, rules)
	testkit.Eventually(t, 20*time.Second, "banner gone once the rules load", func() bool { return banner() == "" })
	if kept, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__notReloaded === true`)); err != nil || !kept {
		t.Fatal("the page was reloaded")
	}
	t.Logf("screenshot: %d bytes", len(shot))
}

// screenshot captures the viewport as PNG, checks it is not blank, writes
// it to the artifacts folder and, with BRIDGE_UPDATE_SCREENSHOT=1, to
// docs/console.png.
func screenshot(t *testing.T, ctx context.Context) []byte {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if colors, dominant := colorStats(img); colors < 16 || dominant > 0.95 {
		t.Fatalf("screenshot looks blank: %d colours, %.0f%% of pixels one colour", colors, dominant*100)
	}
	dir := os.Getenv(artifactsEnv)
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "console.png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot written to %s", path)
	if os.Getenv(screenshotEnv) == "1" {
		if err := os.WriteFile("../docs/console.png", buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return buf
}

// colorStats counts the distinct colours of img and the share of its
// most common one.
func colorStats(img image.Image) (colors int, dominant float64) {
	counts := map[uint32]int{}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			counts[cr>>8<<16|cg>>8<<8|cb>>8]++
		}
	}
	most := 0
	for _, n := range counts {
		most = max(most, n)
	}
	return len(counts), float64(most) / float64(r.Dx()*r.Dy())
}
