package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := execute([]string{"version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "bridge dev (commit ") || !strings.Contains(out.String(), "go1.") {
		t.Fatalf("version output %q", out.String())
	}
}

func TestCheckDefaultConfigFile(t *testing.T) {
	var out, errb bytes.Buffer
	code := execute([]string{"check", "--config", "../../config.toml"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if !strings.Contains(out.String(), "config.toml: ok (") {
		t.Fatalf("stdout %q", out.String())
	}
}

func TestCheckReportsEveryErrorWithLine(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "bad.toml", `rules = ["r/*.toml"]
[coap]
listne = ":5683"
[mqtt]
broker = "ftp://example"
[log]
level = "loud"
format = "xml"
`)
	var out, errb bytes.Buffer
	code := execute([]string{"check", "--config", cfg}, &out, &errb)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", code, errb.String())
	}
	want := []string{
		cfg + `:3: unknown config key "coap.listne" (did you mean "coap.listen"?)`,
		cfg + `:5: mqtt.broker: unsupported scheme "ftp"`,
		cfg + `:7: log.level: unknown level "loud"`,
		cfg + `:8: log.format: want text or json, got "xml"`,
	}
	for _, w := range want {
		if !strings.Contains(errb.String(), w) {
			t.Errorf("stderr lacks %q; got:\n%s", w, errb.String())
		}
	}
}

// TestCheckRejectsNegativeRateLimit: coap.rate_limit, coap.rate_burst and
// coap.rate_block below 0 are refused with the key, its line and what 0 means.
func TestCheckRejectsNegativeRateLimit(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "bad.toml", `[coap]
rate_limit = -5
rate_burst = -1
rate_block = "-1s"
`)
	var out, errb bytes.Buffer
	if code := execute([]string{"check", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", code, errb.String())
	}
	for _, w := range []string{
		cfg + ":2: coap.rate_limit: must not be negative (requests/s per source address; 0 turns the limit off), got -5",
		cfg + ":3: coap.rate_burst: must not be negative (0 means rate_limit), got -1",
		cfg + ":4: coap.rate_block: must not be negative (0 turns blocking off), got -1s",
	} {
		if !strings.Contains(errb.String(), w) {
			t.Errorf("stderr lacks %q; got:\n%s", w, errb.String())
		}
	}
}

// TestCheckRejectsNegativeQueueKeys: devices.awake, queue_size and
// queue_ttl below 0, and a state.dir that does not exist, are refused with
// the key and its line.
func TestCheckRejectsNegativeQueueKeys(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "bad.toml", `[devices]
awake = "-5s"
queue_size = -1
queue_ttl = "-10m"

[state]
dir = "/nonexistent/bridge-state"
`)
	var out, errb bytes.Buffer
	if code := execute([]string{"check", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", code, errb.String())
	}
	for _, w := range []string{
		cfg + ":2: devices.awake: must not be negative (0 means 5s), got -5s",
		cfg + ":3: devices.queue_size: must not be negative (0 means 100), got -1",
		cfg + ":4: devices.queue_ttl: must not be negative (0 means 10m0s), got -10m0s",
		cfg + ":7: state.dir: stat /nonexistent/bridge-state: no such file or directory",
	} {
		if !strings.Contains(errb.String(), w) {
			t.Errorf("stderr lacks %q; got:\n%s", w, errb.String())
		}
	}
}

// TestCheckRejectsBadLimits: a negative coap.limits value, a per-source
// share above its total and a bad duration are each reported at the
// file:line of the key.
func TestCheckRejectsBadLimits(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "bad.toml", `[coap.limits]
observers = -1
block1_transfers = 8
block1_transfers_per_source = 9
block1_timeout = "-2s"
dtls_handshakes_per_source = -3
`)
	var out, errb bytes.Buffer
	if code := execute([]string{"check", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", code, errb.String())
	}
	for _, w := range []string{
		cfg + ":2: coap.limits.observers: must not be negative (0 means the default), got -1",
		cfg + ":4: coap.limits.block1_transfers_per_source: 9 is more than block1_transfers (8): one source could take every slot",
		cfg + ":5: coap.limits.block1_timeout: must not be negative (0 means the default), got -2s",
		cfg + ":6: coap.limits.dtls_handshakes_per_source: must not be negative (0 means the default), got -3",
	} {
		if !strings.Contains(errb.String(), w) {
			t.Errorf("stderr lacks %q; got:\n%s", w, errb.String())
		}
	}
	// A smaller total alone is fine: the default share shrinks to it.
	ok := writeFile(t, t.TempDir(), "ok.toml", "[coap.limits]\nblock1_transfers = 8\nobservers = 10\n")
	out.Reset()
	errb.Reset()
	if code := execute([]string{"check", "--config", ok}, &out, &errb); code != 0 {
		t.Errorf("exit %d for smaller totals; stderr %q", code, errb.String())
	}
}

// TestCheckRejectsBadHandlersPerSource: coap.limits.handlers_per_source
// may be neither negative nor above the server's total of handlers.
func TestCheckRejectsBadHandlersPerSource(t *testing.T) {
	for _, c := range []struct{ value, want string }{
		{"-1", ":2: coap.limits.handlers_per_source: must not be negative (0 means the default), got -1"},
		{"257", ":2: coap.limits.handlers_per_source: 257 is more than the handlers running at once in total (256): one source could take every slot"},
	} {
		cfg := writeFile(t, t.TempDir(), "bad.toml", "[coap.limits]\nhandlers_per_source = "+c.value+"\n")
		var out, errb bytes.Buffer
		if code := execute([]string{"check", "--config", cfg}, &out, &errb); code != 1 {
			t.Fatalf("handlers_per_source = %s: exit %d, want 1; stderr %q", c.value, code, errb.String())
		}
		if !strings.Contains(errb.String(), cfg+c.want) {
			t.Errorf("stderr lacks %q; got:\n%s", cfg+c.want, errb.String())
		}
	}
	ok := writeFile(t, t.TempDir(), "ok.toml", "[coap.limits]\nhandlers_per_source = 256\n")
	var out, errb bytes.Buffer
	if code := execute([]string{"check", "--config", ok}, &out, &errb); code != 0 {
		t.Errorf("exit %d for handlers_per_source = 256; stderr %q", code, errb.String())
	}
}

// TestCheckPrintsEachConfigErrorOnce: every problem is one line of
// output, even when several keys of a section are wrong.
func TestCheckPrintsEachConfigErrorOnce(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "bad.toml", `[mqtt]
broker = "ssl://127.0.0.1:8883"
buffer_size = -1
max_payload = -1
cert_file = "client.pem"
`)
	var out, errb bytes.Buffer
	if code := execute([]string{"check", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", code, errb.String())
	}
	for _, key := range []string{"mqtt.buffer_size: must not be negative", "mqtt.max_payload: must not be negative", "mqtt.cert_file: cert_file and key_file go together"} {
		if n := strings.Count(errb.String(), key); n != 1 {
			t.Errorf("%q printed %d times, want once; stderr:\n%s", key, n, errb.String())
		}
	}
	if lines := strings.Count(strings.TrimSpace(errb.String()), "\n") + 1; lines != 3 {
		t.Errorf("stderr has %d lines, want 3:\n%s", lines, errb.String())
	}
}

func TestCheckMissingExplicitConfig(t *testing.T) {
	var out, errb bytes.Buffer
	code := execute([]string{"check", "--config", filepath.Join(t.TempDir(), "nope.toml")}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "no such file") {
		t.Fatalf("exit %d stderr %q", code, errb.String())
	}
}

func TestLoadConfigDefaultsWhenDefaultFileMissing(t *testing.T) {
	cfg, err := loadConfig(filepath.Join(t.TempDir(), "config.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CoAP.Listen != ":5683" || cfg.MQTT.Broker != "embedded" || cfg.HTTP.Listen != ":9100" || len(cfg.Rules) != 1 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestLoadConfigEnvOverrides(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.toml", "[coap]\nlisten = \":5683\"\n")
	t.Setenv("BRIDGE_COAP_LISTEN", "127.0.0.1:6000")
	t.Setenv("BRIDGE_COAP_DTLS_LISTEN", "127.0.0.1:6001")
	t.Setenv("BRIDGE_COAP_DTLS_PSK_FILE", "keys.toml")
	t.Setenv("BRIDGE_MQTT_BROKER", "tcp://127.0.0.1:1884")
	t.Setenv("BRIDGE_MQTT_PASSWORD", "s3cret")
	t.Setenv("BRIDGE_RULES", "a/*.toml,b.toml")
	c, err := loadConfig(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.CoAP.Listen != "127.0.0.1:6000" || c.CoAP.DTLS.Listen != "127.0.0.1:6001" || c.CoAP.DTLS.PSKFile != "keys.toml" {
		t.Errorf("coap overrides: %+v", c.CoAP)
	}
	if c.MQTT.Broker != "tcp://127.0.0.1:1884" || c.MQTT.Password.Reveal() != "s3cret" {
		t.Errorf("mqtt overrides: %+v", c.MQTT)
	}
	if len(c.Rules) != 2 || c.Rules[0] != "a/*.toml" || c.Rules[1] != "b.toml" {
		t.Errorf("rules override: %q", c.Rules)
	}
}

func TestRunStopsCleanlyOnCancel(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.toml", `rules = []
[coap]
listen = ""
[http]
listen = "127.0.0.1:0"
[mqtt.embedded]
listen = ""
`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var errb bytes.Buffer
	go func() { done <- runBridge(ctx, cfg, true, &errb) }()
	time.AfterFunc(200*time.Millisecond, cancel)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v; log:\n%s", err, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within 10s of cancel")
	}
	if !strings.Contains(errb.String(), "msg=stopped") {
		t.Fatalf("log lacks stop line:\n%s", errb.String())
	}
}

func TestCheckReportsRuleErrorsWithFileLine(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "config.toml", "rules = [\"rules/*.toml\"]\n")
	if err := os.Mkdir(filepath.Join(dir, "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "rules/a.toml", `[[ingress]]
name = "telemetry"
path = "/telemetry/{device}"
topik = "sensors/{device}"
`)
	var out, errb bytes.Buffer
	if code := execute([]string{"check", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, out.String(), errb.String())
	}
	want := filepath.Join(dir, "rules", "a.toml") + ":4: "
	if !strings.Contains(errb.String(), want) || !strings.Contains(errb.String(), "topik") {
		t.Fatalf("stderr lacks %q...topik:\n%s", want, errb.String())
	}
	// run refuses to start on the same errors.
	errb.Reset()
	if err := runBridge(context.Background(), cfg, true, &errb); err == nil || !strings.Contains(errb.String(), want) {
		t.Fatalf("run started despite rule errors: err=%v stderr=%q", err, errb.String())
	}
}

func TestCheckCleanRulesSummary(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "config.toml", "rules = [\"r.toml\"]\n")
	writeFile(t, dir, "r.toml", `[[device]]
name = "d1"
url = "coap://127.0.0.1:5690"

[[ingress]]
name = "telemetry"
path = "/telemetry/{device}/{metric}"
topic = "sensors/{device}/{metric}"
`)
	var out, errb bytes.Buffer
	if code := execute([]string{"check", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "ok (1 devices, 1 ingress, 0 observe") {
		t.Fatalf("summary %q", out.String())
	}
}

// TestCheckLoadsSecurityFiles: bridge check loads the files the config
// names as bridge run does (psk_file, the coaps certificates, the embedded
// broker's auth_file, a TLS broker's CA), and refuses settings the bridge
// would not use: DTLS files without a coaps listener, TLS files for a
// broker that is not TLS, a user and password for the embedded broker.
func TestCheckLoadsSecurityFiles(t *testing.T) {
	dir := t.TempDir()
	goodPSK := writeFile(t, dir, "good-psk.toml", "[[psk]]\nidentity = \"a\"\nkey = \"hex:00112233\"\n")
	badPSK := writeFile(t, dir, "bad-psk.toml", "[[psk]]\nidentity = \"a\"\nkey = \"hex:abc\"\n")
	badAuth := writeFile(t, dir, "auth.toml", "[[user]]\nname = \"u\"\npassword = \"plain-text\"\n")
	garbage := writeFile(t, dir, "ca.pem", "not a certificate\n")
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name, config string
		want         []string // empty: check accepts it
	}{
		{"good psk file", fmt.Sprintf("[coap.dtls]\nlisten = \"127.0.0.1:0\"\npsk_file = %q\n", goodPSK), nil},
		{"bad key in psk file", fmt.Sprintf("[coap.dtls]\nlisten = \"127.0.0.1:0\"\npsk_file = %q\n", badPSK),
			[]string{"coap.dtls: ", "bad-psk.toml:1: identity \"a\"", "even number of hex digits"}},
		{"missing psk file", fmt.Sprintf("[coap.dtls]\nlisten = \"127.0.0.1:0\"\npsk_file = %q\n", missing), []string{"coap.dtls: ", "missing.pem"}},
		{"missing certificate", fmt.Sprintf("[coap.dtls]\nlisten = \"127.0.0.1:0\"\ncert_file = %q\nkey_file = %q\n", missing, missing), []string{"coap.dtls: ", "missing.pem"}},
		{"auth file with a plain password", fmt.Sprintf("[mqtt.embedded]\nauth_file = %q\n", badAuth), []string{"mqtt.embedded.auth_file: ", "bcrypt"}},
		{"TLS broker with a bad CA", fmt.Sprintf("[mqtt]\nbroker = \"ssl://127.0.0.1:8883\"\nca_file = %q\n", garbage), []string{"mqtt: ", "ca_file", "no PEM certificates"}},
		{"psk file without a coaps listener", fmt.Sprintf("[coap.dtls]\npsk_file = %q\n", goodPSK),
			[]string{":3: coap.dtls.psk_file: set, but coap.dtls.listen is empty"}},
		{"CA for a plain broker", fmt.Sprintf("[mqtt]\nbroker = \"tcp://127.0.0.1:1883\"\nca_file = %q\n", garbage),
			[]string{":4: mqtt.ca_file: set, but tcp:// is not TLS"}},
		{"password for the embedded broker", "[mqtt]\nbroker = \"embedded\"\nusername = \"u\"\npassword = \"p\"\n",
			[]string{":4: mqtt.username: set, but mqtt.broker is \"embedded\"", ":5: mqtt.password: set, but"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writeFile(t, t.TempDir(), "config.toml", "rules = []\n"+tt.config)
			var out, errb bytes.Buffer
			code := execute([]string{"check", "--config", cfg}, &out, &errb)
			if len(tt.want) == 0 {
				if code != 0 {
					t.Fatalf("exit %d, want 0: %s", code, errb.String())
				}
				return
			}
			if code != 1 {
				t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, out.String(), errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q; got:\n%s", w, errb.String())
				}
			}
			if strings.Contains(errb.String(), "00112233") || strings.Contains(errb.String(), "plain-text") {
				t.Errorf("stderr quotes a secret: %s", errb.String())
			}
		})
	}
}

// TestUsageErrorsExitTwo: a mistyped command, flag or argument is a usage
// error (exit 2) everywhere, never confused with "not ready" or a failed
// run (exit 1).
func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"frob"},
		{"health", "--bogus"},
		{"health", "extra"},
		{"health", "--timeout", "-1s"},
		{"bench", "frob"},
		{"check", "extra"},
		{"version", "--bogus"},
	} {
		var out, errb bytes.Buffer
		if code := execute(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "error:") {
			t.Errorf("bridge %s: exit %d, stderr %q; want 2 with an error", strings.Join(args, " "), code, errb.String())
		}
	}
}

// TestCheckWarnsOfAGlobMatchingNothing: a rule glob that matches no file
// is legal (rules may come later) but said, so a typo is seen.
func TestCheckWarnsOfAGlobMatchingNothing(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "config.toml", "rules = [\"rules/*.tml\"]\n")
	var out, errb bytes.Buffer
	if code := execute([]string{"check", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), `warning: rules: "rules/*.tml" matches no file`) {
		t.Fatalf("stderr %q, want the warning", errb.String())
	}
}

// TestRunRuleErrorsInJSONLogs: with log.format json every line bridge run
// writes is a JSON record, also the rule file problems it does not start
// on, each with its file and line.
func TestRunRuleErrorsInJSONLogs(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "config.toml", "rules = [\"rules/*.toml\"]\n[log]\nformat = \"json\"\n")
	if err := os.Mkdir(filepath.Join(dir, "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "rules/a.toml", "[[ingress]]\nname = \"telemetry\"\npath = \"/telemetry/{device}\"\ntopik = \"sensors/{device}\"\n")
	var errb bytes.Buffer
	if err := runBridge(context.Background(), cfg, true, &errb); err == nil {
		t.Fatal("run started despite rule errors")
	}
	found := false
	for _, line := range strings.Split(strings.TrimSpace(errb.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON record: %q", line)
		}
		if rec["level"] == "ERROR" && rec["file"] == filepath.Join(dir, "rules", "a.toml") && rec["line"] == float64(4) &&
			strings.Contains(fmt.Sprint(rec["err"]), "topik") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no error record with the file and line:\n%s", errb.String())
	}
}
