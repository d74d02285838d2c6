package bridge

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
)

// TestFloodedIngressKeepsServing floods an ingress rule from one source,
// NON and CON, paced and unpaced, and checks after every run that a device
// is answered 2.04, the reading is published, and /healthz stays 200.
func TestFloodedIngressKeepsServing(t *testing.T) {
	tb := startBridge(t, ingressRules, nil)
	sub := subscribe(t, tb.MQTTAddr(), "sensors/check/#", 1)
	c := newCoAPClient(t)
	base := "http://" + tb.HTTPAddr().String()
	addr := tb.CoAPAddr().(*net.UDPAddr)
	runs := []peer.Flood{
		{Type: message.NonConfirmable},
		{Type: message.Confirmable},
		{Type: message.NonConfirmable, Paced: true},
		{Type: message.Confirmable, Paced: true},
		{Type: message.NonConfirmable},
		{Type: message.NonConfirmable},
	}
	for i, f := range runs {
		f.Path = []string{"telemetry", "flood", "temp"}
		f.Length = 500 * time.Millisecond
		sent := f.Run(t, addr)
		before := tb.coap.srv.Stats().Received
		payload := []byte{byte('a' + i)}
		deadline := time.Now().Add(15 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := c.Post(ctx, tb.coapURL("/telemetry/check/temp"), message.TextPlain, payload)
			cancel()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, coapside.ErrTimeout) {
				t.Fatalf("run %d (%v, %d sent): %v", i, f, sent, err)
			}
			if err == nil && resp.Code == message.Changed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %d (%v, %d sent): the bridge does not answer after the flood (last: %v %v)", i, f, sent, resp, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		sub.waitFor(t, 10*time.Second, "sensors/check/temp", string(payload))
		if after := tb.coap.srv.Stats().Received; after <= before {
			t.Fatalf("run %d: received counter frozen at %d", i, after)
		}
		if code, body := get(t, base+"/healthz"); code != 200 {
			t.Fatalf("run %d: /healthz = %d %q", i, code, body)
		}
	}
	if n := tb.coap.srv.Stats().ReaderRestarts; n != 0 {
		t.Errorf("the CoAP watchdog restarted readers %d times; the pool lost its readers", n)
	}
}

// TestHealthzFailsWhenAListenerStopsReading checks that liveness reports a
// stalled CoAP listener with 503 naming it, and readiness fails with it.
func TestHealthzFailsWhenAListenerStopsReading(t *testing.T) {
	stalled := errors.New("coap: listener stopped reading: 127.0.0.1:5683")
	tb := startBridge(t, ingressRules, nil)
	base := "http://" + tb.HTTPAddr().String()
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz before = %d %q", code, body)
	}
	check := func() error { return stalled }
	tb.liveCheck.Store(&check)
	for _, path := range []string{"/healthz", "/readyz"} {
		code, body := get(t, base+path)
		if code != 503 || !strings.Contains(body, "stopped reading") {
			t.Errorf("%s with a stalled listener = %d %q", path, code, body)
		}
	}
}
