package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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

// TestHealthCommandFollowsConfig: without --url, health asks /readyz on
// the config's http.listen (an address on every interface is asked on
// loopback), with the environment's overrides; a config that serves no
// HTTP, or that does not load, is a usage error (exit 2) saying why.
func TestHealthCommandFollowsConfig(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ready\n"))
	}))
	defer srv.Close()
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := execute(append([]string{"health"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}

	for _, listen := range []string{"127.0.0.1:" + port, ":" + port, "0.0.0.0:" + port} {
		cfg := write(fmt.Sprintf("rules = []\n[http]\nlisten = %q\n", listen))
		if code, out, errs := run("--config", cfg); code != 0 || !strings.Contains(out, "200 ready") {
			t.Errorf("http.listen %q: exit %d out %q err %q, want 0 and 200 ready", listen, code, out, errs)
		}
	}
	// Nothing listens where the file says; the environment moves it.
	cfg := write("rules = []\n[http]\nlisten = \"127.0.0.1:1\"\n")
	if code, out, _ := run("--config", cfg); code != 1 || !strings.Contains(out, "127.0.0.1:1") {
		t.Errorf("nothing on http.listen: exit %d out %q, want 1 naming 127.0.0.1:1", code, out)
	}
	t.Setenv("BRIDGE_HTTP_LISTEN", "127.0.0.1:"+port)
	if code, out, _ := run("--config", cfg); code != 0 {
		t.Errorf("BRIDGE_HTTP_LISTEN: exit %d out %q, want 0", code, out)
	}
	t.Setenv("BRIDGE_HTTP_LISTEN", "")
	off := write("rules = []\n[http]\nlisten = \"\"\n")
	if code, _, errs := run("--config", off); code != 2 || !strings.Contains(errs, "give --url") {
		t.Errorf("no http: exit %d err %q, want 2 saying give --url", code, errs)
	}
	if code, _, errs := run("--config", filepath.Join(t.TempDir(), "missing.toml")); code != 2 || !strings.Contains(errs, "missing.toml") {
		t.Errorf("missing config: exit %d err %q, want 2 naming the file", code, errs)
	}
}
