package mqttside

import (
	"errors"
	"log/slog"
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

// TestPacketFilterNamesMochisBareRecords: mochi's record without a message
// gets one; a connection that ended because its listener closed is debug.
func TestPacketFilterNamesMochisBareRecords(t *testing.T) {
	var buf testkit.SyncBuffer
	l := newPacketFilter(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	l.Warn("", "listener", "tcp", "error", errors.New("read tcp 127.0.0.1:1883->127.0.0.1:5: use of closed network connection"))
	l.Warn("", "listener", "tcp", "error", errors.New("read tcp 127.0.0.1:1883->127.0.0.1:6: connection reset by peer"))
	out := buf.String()
	if strings.Contains(out, `msg=""`) || strings.Contains(out, "closed network connection") {
		t.Errorf("bare or shutdown records at info: %s", out)
	}
	if !strings.Contains(out, `level=WARN msg="mqtt client connection ended"`) || !strings.Contains(out, "connection reset by peer") {
		t.Errorf("the reset connection's record lost: %s", out)
	}
}
