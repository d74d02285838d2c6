package bridge

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coap-mqtt/bridge/rules"
)

// TestCheckRulesThatCannotFire: rules the configuration gives no way to
// fire fail the check with file:line; the same rules pass where they can.
func TestCheckRulesThatCannotFire(t *testing.T) {
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.toml")
	if err := os.WriteFile(ruleFile, []byte(secureRules+`
[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name        string
		listen, sec string
		want        []string
	}{
		{"plain and coaps", ":0", ":0", nil},
		{"coaps only", "", ":0", nil},
		{"plain only", ":0", "", []string{
			ruleFile + `:2: [[ingress]] "secure": identity = "{device}" needs coaps clients, but coap.dtls.listen is empty: every request would get 4.01`,
		}},
		{"no listener", "", "", []string{
			ruleFile + `:2: [[ingress]] "secure": coap.listen and coap.dtls.listen are both empty, so no request can reach the rule`,
			ruleFile + `:9: [[ingress]] "who": coap.listen and coap.dtls.listen are both empty, so no request can reach the rule`,
			ruleFile + `:15: [[resource]] "config": coap.listen and coap.dtls.listen are both empty, so no request can reach the rule`,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.File = filepath.Join(dir, "config.toml")
			cfg.Rules = []string{"rules.toml"}
			cfg.CoAP.Listen, cfg.CoAP.DTLS.Listen = tc.listen, tc.sec
			if tc.sec != "" {
				cfg.CoAP.DTLS.PSKFile = filepath.Join("..", "coapside", "dtls", "keys", "testdata", "psk.toml")
			}
			_, err := Check(cfg)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("check: %v", err)
				}
				return
			}
			var es rules.Errors
			if !errors.As(err, &es) {
				t.Fatalf("check: %v, want rules.Errors", err)
			}
			if got := err.Error(); got != strings.Join(tc.want, "\n") {
				t.Fatalf("got\n%s\nwant\n%s", got, strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestCheckDeviceCredentials: a coaps device whose DTLS credentials do not
// build fails the check at the device's file:line, as bridge check and a
// reload report it, instead of failing every handshake later.
func TestCheckDeviceCredentials(t *testing.T) {
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.toml")
	if err := os.WriteFile(ruleFile, []byte(`
[[device]]
name         = "ok"
url          = "coaps://127.0.0.1"
psk_identity = "ok"
psk          = "k"

[[device]]
name      = "meter"
url       = "coaps://127.0.0.1:5700"
cert_file = "missing.pem"
key_file  = "missing.key"
ca_file   = "ca.pem"

[[device]]
name         = "long"
url          = "coaps://127.0.0.1:5701"
psk_identity = "`+strings.Repeat("i", 300)+`"
psk          = "k"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.File = filepath.Join(dir, "config.toml")
	cfg.Rules = []string{"rules.toml"}
	_, err := Check(cfg)
	var es rules.Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("check: %v, want two rules.Errors", err)
	}
	if got := es[0].Error(); !strings.HasPrefix(got, ruleFile+`:8: [[device]] "meter": dtls: invalid config: certificate: open `+filepath.Join(dir, "missing.pem")) {
		t.Errorf("got %s", got)
	}
	if got, want := es[1].Error(), ruleFile+`:15: [[device]] "long": dtls: invalid config: psk identity longer than 256 bytes`; got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}
