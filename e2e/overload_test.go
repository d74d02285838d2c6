package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
)

// TestE2EFloodDoesNotSilenceTheServer floods the built bridge's ingress rule
// from one socket (NON and CON, as the load tool's `req -non -c 1` does),
// then checks that libcoap's coap-client still gets its POST answered and
// published, and that /healthz answers 200.
func TestE2EFloodDoesNotSilenceTheServer(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	b := startBridgeBin(t, bridgeSetup{rules: ingressRule})
	sub := startSub(t, b.mqttPort, "sensors/after/#")
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: b.coapPort}
	runs := []peer.Flood{
		{Type: message.NonConfirmable, Length: 3 * time.Second},
		{Type: message.Confirmable, Length: 2 * time.Second},
		{Type: message.NonConfirmable, Paced: true, Length: 2 * time.Second},
	}
	for i, f := range runs {
		f.Path = []string{"telemetry", "flood", "temp"}
		sent := f.Run(t, addr)
		value := fmt.Sprintf("v%d", i)
		// coap-client retransmits on its own; a 5.03 right after the flood
		// is retried after a pause.
		var out string
		deadline := time.Now().Add(30 * time.Second)
		for {
			var code int
			out, code = run(t, 20*time.Second, ".", client, "-m", "post", "-B", "10", "-e", value, b.coapURL("/telemetry/after/temp"))
			if code == 0 && !strings.Contains(out, "5.03") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %d (%v, %d sent): no answer after the flood: exit %d %q", i, f, sent, code, out)
			}
			time.Sleep(500 * time.Millisecond)
		}
		sub.waitLine(t, 10*time.Second, "sensors/after/temp "+value)
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", b.httpPort))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("run %d: /healthz = %d %q", i, resp.StatusCode, body)
		}
	}
	// The reader pool kept its readers by itself: the watchdog never had to.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", b.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "\nbridge_coap_reader_restarts_total 0\n") {
		t.Errorf("reader restarts after the floods: %s", grepLines(string(metrics), "bridge_coap_reader_restarts_total"))
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
