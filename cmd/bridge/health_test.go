package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthCommand(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready: [mqtt]\n"))
			return
		}
		w.Write([]byte("ready\n"))
	}))
	defer srv.Close()
	tests := []struct {
		name  string
		ready bool
		url   string
		code  int
		out   string
	}{
		{"ready", true, srv.URL, 0, "200 ready"},
		{"not ready", false, srv.URL, 1, "503 not ready: [mqtt]"},
		{"unreachable", true, "http://127.0.0.1:1/readyz", 1, "not reachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready = tt.ready
			var out, errb bytes.Buffer
			code := execute([]string{"health", "--url", tt.url}, &out, &errb)
			if code != tt.code || !strings.Contains(out.String(), tt.out) {
				t.Fatalf("exit %d out %q, want %d %q", code, out.String(), tt.code, tt.out)
			}
		})
	}
}
