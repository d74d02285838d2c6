package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/coap-mqtt/bridge/bridge"
)

// FuzzLoadConfig feeds arbitrary text to the path `bridge check` takes: the
// config file is read (TOML), decoded, defaulted and validated, then its
// rule files are loaded. Nothing may panic; a failure is an errorList of
// positioned messages, and a config that loads is valid.
func FuzzLoadConfig(f *testing.F) {
	if b, err := os.ReadFile("../../config.toml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"rules = [\"r/*.toml\"]\n[coap]\nlistne = \":5683\"\n[mqtt]\nbroker = \"ftp://example\"\n[log]\nlevel = \"loud\"\n",
		"rules = \"r/*.toml,s/*.toml\"\n[mqtt]\nbuffer_size = -1\nmax_payload = \"x\"\n",
		"[coap.dtls]\nlisten = \":5684\"\ncert_file = \"c.pem\"\n",
		"[mqtt]\nbroker = \"tcp://[::1\"\npassword = 3\n",
		"[mqtt]\nbroker = \"%zz\"\nclient_id = \"\"\n[[mqtt.embedded]]\nlisten = 1\n",
		"coap = 1\n[coap]\n",
		"[a.b.c.d.e.f]\n\"\" = []\n",
		"rules = [\"\", \" \", \"r/[.toml\"]\n",
		"[coap]\nlisten = \":5683\"\n[coap]\nlisten = \":5684\"\n",
		"\ufeff[log]\r\nformat = 'json'\r\n",
	} {
		f.Add([]byte(s))
	}
	// One folder for the whole run: each fuzzing worker is a process of
	// its own, running one input at a time.
	path := filepath.Join(f.TempDir(), "config.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(path, true)
		if err != nil {
			var el *errorList
			if !errors.As(err, &el) {
				if err.Error() == "" {
					t.Fatal("empty error")
				}
				return // the TOML did not parse: one message from the reader
			}
			if len(el.msgs) == 0 {
				t.Fatal("empty error list")
			}
			for _, m := range el.msgs {
				if m == "" {
					t.Fatalf("empty message in %q", el.msgs)
				}
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("loaded config does not validate: %v", err)
		}
		// Rule globs outside the config's folder would read the machine's
		// files; the loader's handling of those is not this target's.
		for _, g := range cfg.Rules {
			if filepath.IsAbs(g) || !filepath.IsLocal(g) {
				return
			}
		}
		if _, err := bridge.Check(cfg); err != nil && err.Error() == "" {
			t.Fatal("empty error from check")
		}
	})
}
