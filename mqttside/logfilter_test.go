package mqttside

import (
	"strings"
	"testing"

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func TestPacketFilter(t *testing.T) {
	var buf testkit.SyncBuffer
	l := newPacketFilter(testLogger(&buf)).With("component", "mochi", "pk", "early-secret")
	l.Warn("error processing packet", "error", "boom", "pk", struct{ Password string }{"hunter2"}, "client", "c1")
	l.Debug("failed publishing packet", "packet", "payload-bytes", "client", "c2")
	l.Info("plain", "client", "c3")
	out := buf.String()
	for _, leaked := range []string{"hunter2", "payload-bytes", "early-secret"} {
		if strings.Contains(out, leaked) {
			t.Errorf("packet attribute leaked (%s): %s", leaked, out)
		}
	}
	for _, kept := range []string{"boom", "client=c1", "client=c2", "client=c3", "component=mochi"} {
		if !strings.Contains(out, kept) {
			t.Errorf("lost %q: %s", kept, out)
		}
	}
}
