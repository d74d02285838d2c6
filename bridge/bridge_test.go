package bridge

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func testConfig() Config {
	c := Defaults()
	c.Rules = nil
	c.CoAP.Listen = ""
	c.MQTT.Embedded.Listen = ""
	c.HTTP.Listen = "127.0.0.1:0"
	return c
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRunServesHealthAndMetrics(t *testing.T) {
	b, err := New(testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for b.HTTPAddr() == nil {
		if time.Now().After(deadline) {
			t.Fatal("http endpoint never listened")
		}
		time.Sleep(5 * time.Millisecond)
	}
	base := "http://" + b.HTTPAddr().String()
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics = %d, lacks go_goroutines", code)
	}
	b.health.set("mqtt", false)
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "mqtt") {
		t.Errorf("/readyz with mqtt down = %d %q", code, body)
	}
	b.health.set("mqtt", true)
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz when ready = %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(ShutdownGrace + time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	c := testConfig()
	c.Log.Format = "yaml"
	if _, err := New(c, nil); err == nil {
		t.Fatal("New accepted an invalid config")
	}
}
