package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestConfigPositionsReadFileOnce: error positions come from one reading of
// the config file, so a file with many bad keys is checked in time linear
// in its size rather than read again for every problem.
func TestConfigPositionsReadFileOnce(t *testing.T) {
	var b strings.Builder
	b.WriteString("[coap]\nlisten = \":5683\"\n")
	for i := range 100 {
		fmt.Fprintf(&b, "k%d = 1\n", i)
	}
	file := writeFile(t, t.TempDir(), "config.toml", b.String())
	p := &positions{file: file}
	if got, want := p.at("coap.listen"), file+":2: "; got != want {
		t.Fatalf("coap.listen at %q, want %q", got, want)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	// Read once: later problems are still positioned without the file.
	if got, want := p.at("coap.k99"), file+":102: "; got != want {
		t.Fatalf("coap.k99 at %q, want %q", got, want)
	}
	if got, want := p.at("coap.missing"), file+": "; got != want {
		t.Fatalf("unwritten key at %q, want %q", got, want)
	}
	if got, want := (&positions{}).at("x"), "config: "; got != want {
		t.Fatalf("no file: %q, want %q", got, want)
	}
}

// TestConfigHTTPConsole: http.console is on unless the file or the
// environment turns it off.
func TestConfigHTTPConsole(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		file, env string
		want      bool
	}{
		{"[http]\nlisten = \"127.0.0.1:0\"\n", "", true},
		{"[http]\nconsole = false\n", "", false},
		{"[http]\nconsole = true\n", "", true},
		{"[http]\n", "false", false},
	} {
		t.Run(fmt.Sprintf("%q/%s", tc.file, tc.env), func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("BRIDGE_HTTP_CONSOLE", tc.env)
			}
			file := writeFile(t, dir, "config.toml", tc.file+"[mqtt]\nbroker = \"embedded\"\n")
			cfg, err := loadConfig(file, true)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.HTTP.ConsoleOn(); got != tc.want {
				t.Fatalf("console on: %v, want %v", got, tc.want)
			}
		})
	}
}

// TestConfigPerDeviceMetrics: the metrics section is read from the file
// and the environment, and bridge check refuses a negative
// per_device_max with its key and line.
func TestConfigPerDeviceMetrics(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "config.toml", "[metrics]\nper_device_max = 50\n[mqtt]\nbroker = \"embedded\"\n")
	t.Setenv("BRIDGE_METRICS_PER_DEVICE", "true")
	cfg, err := loadConfig(file, true)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Metrics.PerDevice || cfg.Metrics.PerDeviceMax != 50 {
		t.Fatalf("metrics %+v, want per_device on with a cap of 50", cfg.Metrics)
	}
	bad := writeFile(t, dir, "bad.toml", "rules = []\n[metrics]\nper_device_max = -1\n")
	code, out, errOut := runCLI(t, "check", "--config", bad)
	if want := "bad.toml:3: metrics.per_device_max: must not be negative"; code == 0 || !strings.Contains(out+errOut, want) {
		t.Fatalf("check: exit %d, output %q %q, want a failure with %q", code, out, errOut, want)
	}
}

// TestConfigUnknownSection: a table header naming no section, with no key
// under it, is refused with its line and the nearest section; known
// sections written empty, comments after a header and a misspelt section
// holding keys (reported per key) are not reported as sections.
func TestConfigUnknownSection(t *testing.T) {
	file := writeFile(t, t.TempDir(), "config.toml", `[coap]
listen = ":5683"
[coap.limits]   # all defaults
[catalogue]
[devices] # x
[mqtt.embeded]
listen = ":1883"
[nothing.like.it]
`)
	_, err := loadConfig(file, true)
	if err == nil {
		t.Fatal("accepted")
	}
	got := strings.Split(err.Error(), "\n")
	want := []string{
		file + `:7: unknown config key "mqtt.embeded.listen" (did you mean "mqtt.embedded.listen"?)`,
		file + ":4: unknown config section [catalogue] (did you mean [catalog]?)",
		file + ":8: unknown config section [nothing.like.it]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestEnvWarnings: a BRIDGE_<SECTION>_... variable that names no key is
// warned about, with the nearest key's variable; a known key's variable
// and variables outside the config's sections are not.
func TestEnvWarnings(t *testing.T) {
	got := envWarnings([]string{
		"BRIDGE_COAP_LISEN=:5700",
		"BRIDGE_COAP_LISTEN=:5683",
		"BRIDGE_MQTT_EMBEDDED_AUTH_FILE=a.toml",
		"BRIDGE_E2E_STRICT=1",
		"HOME=/root",
	})
	if len(got) != 1 || !strings.Contains(got[0], "BRIDGE_COAP_LISEN names no config key") || !strings.Contains(got[0], "did you mean BRIDGE_COAP_LISTEN?") {
		t.Fatalf("warnings %q", got)
	}
}

// TestConfigValueErrorsArePlaced: a value that does not decode is reported
// at its file:line, or at the environment variable that set it; a TOML
// syntax error at its line.
func TestConfigValueErrorsArePlaced(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "config.toml", "rules = []\n[coap]\nrate_limit = \"abc\"\n")
	_, err := loadConfig(cfg, true)
	if err == nil || !strings.Contains(err.Error(), cfg+":3: coap.rate_limit: cannot parse value") {
		t.Errorf("file value: %v", err)
	}
	empty := writeFile(t, dir, "empty.toml", "rules = []\n")
	t.Setenv("BRIDGE_COAP_RATE_BURST", "many")
	_, err = loadConfig(empty, true)
	if err == nil || !strings.Contains(err.Error(), "environment variable BRIDGE_COAP_RATE_BURST (coap.rate_burst): cannot parse") {
		t.Errorf("environment value: %v", err)
	}
	big := writeFile(t, dir, "big.toml", "rules = []\n[coap]\nrate_burst = 99999999999999999999\n")
	_, err = loadConfig(big, true)
	if err == nil || !strings.HasPrefix(err.Error(), big+":3: ") {
		t.Errorf("TOML error: %v", err)
	}
}

// TestConfigInvalidEnvValueIsPlacedAtVariable: a value that decodes but is
// not valid (a broker URL without scheme, an unknown log level) is reported
// at the environment variable that set it, not at the line of the file
// whose value the variable replaced; an empty variable replaces nothing.
func TestConfigInvalidEnvValueIsPlacedAtVariable(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "config.toml", "rules = []\n[mqtt]\nbroker = \"embedded\"\n[log]\nlevel = \"info\"\nformat = \"yaml\"\n")
	t.Setenv("BRIDGE_MQTT_BROKER", "localhost:1883")
	t.Setenv("BRIDGE_LOG_LEVEL", "verbose")
	t.Setenv("BRIDGE_LOG_FORMAT", "")
	_, err := loadConfig(cfg, true)
	if err == nil {
		t.Fatal("loaded")
	}
	msg := err.Error()
	for _, want := range []string{
		"environment variable BRIDGE_MQTT_BROKER (mqtt.broker): must be",
		"environment variable BRIDGE_LOG_LEVEL (log.level): unknown level",
		cfg + ":6: log.format: want text or json",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("no %q in\n%s", want, msg)
		}
	}
	if strings.Contains(msg, cfg+":3:") || strings.Contains(msg, cfg+":5:") {
		t.Errorf("an environment value placed at the file's line:\n%s", msg)
	}
}

// TestConfigEnvListTrimsSpaces: a list in an environment variable may be
// written with spaces after its commas, as people write lists; the
// spaces are not part of the values (a rule glob " b/*.toml" would match
// nothing).
func TestConfigEnvListTrimsSpaces(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "config.toml", "rules = [\"x.toml\"]\n")
	t.Setenv("BRIDGE_RULES", "rules/*.toml, extra/*.toml ,last.toml")
	c, err := loadConfig(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"rules/*.toml", "extra/*.toml", "last.toml"}; !slices.Equal(c.Rules, want) {
		t.Errorf("rules %q, want %q", c.Rules, want)
	}
}
