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
				cfg.CoAP.DTLS.PSKFile = filepath.Join("..", "rules", "testdata", "good", "keys.toml")
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
