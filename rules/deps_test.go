package rules

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImportBoundary keeps the rule loader on the pure side of the CoAP
// stack: from this module it may import only the codec vocabulary
// (coapside/message), coap URIs (coapside/uri) and key syntax (coapside/dtls/keys),
// never the coapside root, the DTLS transport (pion), mqttside or bridge.
func TestImportBoundary(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const module = "github.com/coap-mqtt/bridge"
	allowed := []string{module + "/rules", module + "/coapside/message", module + "/coapside/uri", module + "/coapside/dtls/keys"}
	var seen []string
	for _, p := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(p, module+"/") && !slices.Contains(allowed, p):
			t.Errorf("rules depends on %s", p)
		case strings.HasPrefix(p, "github.com/pion/"):
			t.Errorf("rules depends on the DTLS library: %s", p)
		case strings.HasPrefix(p, module+"/"):
			seen = append(seen, p)
		}
	}
	if !slices.Contains(seen, module+"/coapside/dtls/keys") || !slices.Contains(seen, module+"/coapside/message") {
		t.Errorf("go list found %v: the check is not looking at rules", seen)
	}
}
