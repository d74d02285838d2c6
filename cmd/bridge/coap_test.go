package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/fxamacker/cbor/v2"
	"go.uber.org/goleak"
)

// verifyNoLeaks fails t if goroutines started during the test outlive it and
// its cleanups (registered first, so it runs last).
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore, goleak.IgnoreTopFunction("os/signal.signal_recv"), goleak.IgnoreTopFunction("os/signal.loop"))
	})
}

// serveCoap serves h on conn until cleanup.
func serveCoap(t *testing.T, h coapside.Handler, conn net.PacketConn) {
	t.Helper()
	s := &coapside.Server{Handler: h}
	done := make(chan error, 1)
	go func() { done <- s.Serve(conn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, coapside.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
}

// testDevice is an in-process CoAP server with one resource per display case.
type testDevice struct {
	obs *coapside.ObserveServer

	mu     sync.Mutex
	lastCF string // Content-Format of the last POST/PUT, or "none"
	lastP  string
	lastT  message.Type
	count  int
	gone   bool // /ending answers 4.04 once set
}

func (d *testDevice) record(r *coapside.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastCF = "none"
	if mt, ok := r.Options.ContentFormat(); ok {
		d.lastCF = fmt.Sprint(uint16(mt))
	}
	d.lastP = string(r.Payload)
	d.lastT = r.Type
}

func (d *testDevice) last() (cf, payload string, typ message.Type) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastCF, d.lastP, d.lastT
}

func (d *testDevice) mux(t *testing.T) *coapside.ServeMux {
	m := coapside.NewServeMux()
	fixed := func(mt message.MediaType, body []byte) coapside.HandlerFunc {
		return func(w coapside.ResponseWriter, _ *coapside.Request) {
			w.SetContentFormat(mt)
			_, _ = w.Write(body)
		}
	}
	cb, err := cbor.Marshal(map[string]any{"temp": 21.5, "ok": true})
	if err != nil {
		t.Fatal(err)
	}
	m.HandleResource("GET /text", fixed(message.TextPlain, []byte("hello")), linkformat.Resource{ResourceTypes: []string{"greeting"}, ContentFormats: []uint16{0}})
	m.HandleResource("GET /json", fixed(message.AppJSON, []byte(`{"a":1,"b":[true,null]}`)), linkformat.Resource{ResourceTypes: []string{"config"}, ContentFormats: []uint16{50}, Size: 23})
	m.Handle("GET /cbor", fixed(message.AppCBOR, cb))
	// RFC 8428 §6: SenML CBOR labels n=0, u=1, v=2.
	scb, err := cbor.Marshal([]map[int]any{{0: "hum", 1: "%RH", 2: 48.25}})
	if err != nil {
		t.Fatal(err)
	}
	m.Handle("GET /senmlcbor", fixed(message.AppSenMLCBOR, scb))
	m.Handle("GET /senml", fixed(message.AppSenMLJSON, []byte(`[{"bn":"urn:dev:x:","n":"temp","u":"Cel","v":21.5}]`)))
	m.Handle("GET /bin", fixed(message.AppOctets, []byte{0x00, 0x01, 0xfe, 0xff}))
	m.Handle("GET /badjson", fixed(message.AppJSON, []byte(`{"a":`)))
	m.HandleFunc("GET /fail", func(w coapside.ResponseWriter, _ *coapside.Request) {
		w.SetCode(message.InternalServerError)
		_, _ = w.Write([]byte("boom"))
	})
	echo := func(code message.Code) coapside.HandlerFunc {
		return func(w coapside.ResponseWriter, r *coapside.Request) {
			d.record(r)
			w.SetCode(code)
			if mt, ok := r.Options.ContentFormat(); ok {
				w.SetContentFormat(mt)
			}
			_, _ = w.Write(r.Payload)
		}
	}
	m.Handle("POST /echo", echo(message.Created))
	m.Handle("PUT /echo", echo(message.Changed))
	m.Handle("DELETE /echo", echo(message.Deleted))
	m.HandleFunc("GET /accept", func(w coapside.ResponseWriter, r *coapside.Request) {
		mt, ok := r.Options.Accept()
		if !ok || mt != message.AppCBOR {
			w.SetCode(message.NotAcceptable)
			return
		}
		w.SetContentFormat(message.AppCBOR)
		_, _ = w.Write(cb)
	})
	m.HandleResource("GET /obs", d.obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, _ *coapside.Request) {
		d.mu.Lock()
		n := d.count
		d.mu.Unlock()
		w.SetContentFormat(message.TextPlain)
		_, _ = fmt.Fprintf(w, "n=%d", n)
	})), linkformat.Resource{ResourceTypes: []string{"counter", "temperature"}, Interfaces: []string{"sensor"}, ContentFormats: []uint16{0}, Observable: true})
	m.Handle("GET /ending", d.obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, _ *coapside.Request) {
		d.mu.Lock()
		gone := d.gone
		d.mu.Unlock()
		if gone {
			w.SetCode(message.NotFound)
			_, _ = w.Write([]byte("sensor removed"))
			return
		}
		w.SetContentFormat(message.TextPlain)
		_, _ = w.Write([]byte("here"))
	})))
	return m
}

// startTestDevice serves the test resources on 127.0.0.1:0 (and on the
// DTLS listener sc when it is not nil) and bumps /obs every 30 ms.
func startTestDevice(t *testing.T, sc *dtls.ServerConn) (d *testDevice, plain, secure string) {
	t.Helper()
	obs, err := coapside.NewObserveServer(coapside.ObserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d = &testDevice{obs: obs}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = obs.Run(ctx) }()
	go func() {
		defer wg.Done()
		tk := time.NewTicker(30 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				d.mu.Lock()
				d.count++
				d.mu.Unlock()
				obs.Notify("/obs")
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	mux := d.mux(t)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveCoap(t, mux, conn)
	plain = "coap://" + conn.LocalAddr().String()
	if sc != nil {
		serveCoap(t, mux, sc)
		secure = "coaps://" + sc.LocalAddr().String()
	}
	return d, plain, secure
}

// runCLI executes the CLI and returns exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := execute(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCoapCommands(t *testing.T) {
	verifyNoLeaks(t)
	dev, base, _ := startTestDevice(t, nil)
	dir := t.TempDir()
	file := writeFile(t, dir, "body.json", `{"from":"file"}`)
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silentURL := "coap://" + silent.LocalAddr().String() + "/x"

	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    []string // substrings of stdout
		exact     string   // exact stdout, when set
		stderr    []string
		wantCF    string // Content-Format the server saw, for POST/PUT
		wantBody  string
		wantNON   bool
		notStdout []string
	}{
		{name: "get text", args: []string{"get", base + "/text"}, exact: "hello\n"},
		{name: "get json pretty", args: []string{"get", base + "/json"}, exact: "{\n  \"a\": 1,\n  \"b\": [\n    true,\n    null\n  ]\n}\n"},
		{name: "get json raw", args: []string{"get", "--raw", base + "/json"}, exact: `{"a":1,"b":[true,null]}`},
		{name: "get cbor as json", args: []string{"get", base + "/cbor"}, stdout: []string{"\"temp\": 21.5", "\"ok\": true", "{\n  "}},
		{name: "get senml as json", args: []string{"get", base + "/senml"}, stdout: []string{"21.5", "urn:dev:x:temp", "[\n  {"}},
		{name: "get senml cbor as json", args: []string{"get", base + "/senmlcbor"}, stdout: []string{"48.25", "\"hum\"", "%RH"}},
		{name: "get binary as hex", args: []string{"get", base + "/bin"}, stdout: []string{"00 01 fe ff"}},
		{name: "get invalid json shown", args: []string{"get", base + "/badjson"}, stdout: []string{"not valid", `{"a":`}},
		{name: "accept by name", args: []string{"get", "--accept", "cbor", base + "/accept"}, stdout: []string{"\"temp\": 21.5"}},
		{name: "accept missing 4.06", args: []string{"get", base + "/accept"}, code: 1, stderr: []string{"4.06"}},
		{name: "post payload json by name", args: []string{"post", "-t", "json", "-p", `{"x":2}`, base + "/echo"}, stdout: []string{"\"x\": 2"}, wantCF: "50", wantBody: `{"x":2}`},
		{name: "put from file senml by name", args: []string{"put", "-t", "senml+json", "-f", file, base + "/echo"}, exact: "{\n  \"from\": \"file\"\n}\n", wantCF: "110", wantBody: `{"from":"file"}`},
		{name: "put content format by number", args: []string{"put", "-t", "60", "--raw", "-p", "\xa0", base + "/echo"}, exact: "\xa0", wantCF: "60", wantBody: "\xa0"},
		{name: "post without format", args: []string{"post", "-p", "plain", base + "/echo"}, exact: "plain\n", wantCF: "none", wantBody: "plain"},
		{name: "post non-confirmable", args: []string{"post", "--non", "-t", "text", "-p", "n", base + "/echo"}, exact: "n\n", wantCF: "0", wantBody: "n", wantNON: true},
		{name: "delete", args: []string{"delete", base + "/echo"}, exact: ""},
		{name: "verbose", args: []string{"get", "-v", base + "/json"}, stdout: []string{"\"a\": 1"}, stderr: []string{
			"> CON 0.01 GET MID=", `Uri-Path: "json"`, "< ACK 2.05 Content MID=", "Content-Format: application/json (50)", "payload: 23 bytes", "token=0x",
		}},
		{name: "not found exit 1", args: []string{"get", base + "/missing"}, code: 1, stderr: []string{"4.04 Not Found"}},
		{name: "method not allowed exit 1", args: []string{"put", "-p", "x", base + "/text"}, code: 1, stderr: []string{"4.05"}},
		{name: "server error exit 1", args: []string{"get", base + "/fail"}, code: 1, stderr: []string{"5.00 Internal Server Error: boom"}},
		{name: "timeout exit 3", args: []string{"get", "--timeout", "300ms", silentURL}, code: 3, stderr: []string{"timeout"}},
		{name: "non timeout exit 3", args: []string{"get", "--non", "--timeout", "200ms", silentURL}, code: 3, stderr: []string{"timeout"}},
		{name: "bad scheme exit 2", args: []string{"get", "http://127.0.0.1/x"}, code: 2, stderr: []string{"invalid URL"}},
		{name: "unknown content format exit 2", args: []string{"post", "-t", "yaml", "-p", "x", base + "/echo"}, code: 2, stderr: []string{`unknown content format "yaml"`, "senml+cbor"}},
		{name: "payload and file exit 2", args: []string{"post", "-p", "x", "-f", file, base + "/echo"}, code: 2, stderr: []string{"not both"}},
		{name: "missing file exit 2", args: []string{"post", "-f", filepath.Join(dir, "nope"), base + "/echo"}, code: 2, stderr: []string{"no such file"}},
		{name: "no url exit 2", args: []string{"get"}, code: 2, stderr: []string{"exactly one URL"}},
		{name: "unknown flag exit 2", args: []string{"get", "--frob", base + "/text"}, code: 2, stderr: []string{"unknown flag"}},
		{name: "unknown subcommand exit 2", args: []string{"fetch", base}, code: 2, stderr: []string{`unknown subcommand "fetch"`}},
		{name: "dtls flags need coaps exit 2", args: []string{"get", "--psk-identity", "a", "--psk-key", "b", base + "/text"}, code: 2, stderr: []string{"coaps://"}},
		{name: "bad query exit 2", args: []string{"discover", "--query", "=x", base}, code: 2, stderr: []string{"--query"}},
		{name: "discover table", args: []string{"discover", base}, stdout: []string{
			"PATH", "RT", "IF", "CT", "OBS", "SZ",
			"/text", "greeting", "/json", "config", "23", "/obs", "counter temperature", "sensor", "yes",
		}},
		{name: "discover filter", args: []string{"discover", "--query", "rt=temperature", base + "/.well-known/core"}, stdout: []string{"/obs"}, notStdout: []string{"/text", "/json"}},
		{name: "discover raw", args: []string{"discover", "--raw", "--query", "rt=greeting", base}, exact: "</text>;rt=\"greeting\";ct=0\n"},
		{name: "observe count", args: []string{"observe", "--count", "3", base + "/obs"}, stdout: []string{"n="}},
		{name: "observe not observable", args: []string{"observe", "--count", "2", base + "/text"}, exact: "hello\n", stderr: []string{"not observable"}},
		{name: "observe not found", args: []string{"observe", base + "/missing"}, code: 1, stderr: []string{"4.04"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, append([]string{"coap"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, out, errOut)
			}
			if tc.exact != "" || (len(tc.stdout) == 0 && tc.code == 0) {
				if out != tc.exact {
					t.Errorf("stdout %q, want %q", out, tc.exact)
				}
			}
			for _, s := range tc.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tc.notStdout {
				if strings.Contains(out, s) {
					t.Errorf("stdout has %q:\n%s", s, out)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(errOut, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut)
				}
			}
			if tc.wantCF != "" {
				cf, body, typ := dev.last()
				if cf != tc.wantCF || body != tc.wantBody {
					t.Errorf("server saw Content-Format %s payload %q, want %s %q", cf, body, tc.wantCF, tc.wantBody)
				}
				if (typ == message.NonConfirmable) != tc.wantNON {
					t.Errorf("request type %v, want NON=%v", typ, tc.wantNON)
				}
			}
		})
	}
}

func TestCoapObserveCountAndDeregister(t *testing.T) {
	verifyNoLeaks(t)
	dev, base, _ := startTestDevice(t, nil)
	code, out, errOut := runCLI(t, "coap", "observe", "-v", "--count", "3", base+"/obs")
	if code != 0 {
		t.Fatalf("exit %d stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 notifications, got %q", out)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "n=") {
			t.Errorf("notification %q", l)
		}
	}
	if n := strings.Count(errOut, "< 2.05 Content Observe="); n != 3 {
		t.Errorf("verbose shows %d notifications:\n%s", n, errOut)
	}
	// RFC 7641 §3.6: the command deregisters when it stops.
	testkit.Eventually(t, 2*time.Second, "deregistration", func() bool { return dev.obs.Observers("/obs") == 0 })
}

// TestCoapObserveEndedByServer: an error notification ends the observation
// (RFC 7641 §3.2) and the command exits 1.
func TestCoapObserveEndedByServer(t *testing.T) {
	verifyNoLeaks(t)
	dev, base, _ := startTestDevice(t, nil)
	var out, errb testkit.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- execute([]string{"coap", "observe", base + "/ending"}, &out, &errb) }()
	testkit.Eventually(t, 5*time.Second, "registration", func() bool { return dev.obs.Observers("/ending") == 1 })
	dev.mu.Lock()
	dev.gone = true
	dev.mu.Unlock()
	dev.obs.Notify("/ending")
	select {
	case code := <-done:
		if code != exitCoAPError {
			t.Fatalf("exit %d, want %d; stderr %q", code, exitCoAPError, errb.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("observe did not end after the error notification")
	}
	if out.String() != "here\n" || !strings.Contains(errb.String(), "4.04 Not Found sensor removed") {
		t.Errorf("stdout %q stderr %q", out.String(), errb.String())
	}
}

// TestCoapObserveSIGTERM: the stream runs until SIGTERM, then deregisters
// and exits 0.
func TestCoapObserveSIGTERM(t *testing.T) {
	verifyNoLeaks(t)
	dev, base, _ := startTestDevice(t, nil)
	var out, errb testkit.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- execute([]string{"coap", "observe", base + "/obs"}, &out, &errb) }()
	// The signal handler is installed before the registration is sent.
	testkit.Eventually(t, 5*time.Second, "notifications", func() bool { return strings.Count(out.String(), "n=") >= 3 })
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d; stderr %q", code, errb.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("observe did not stop on SIGTERM")
	}
	if n := dev.obs.Observers("/obs"); n != 0 {
		t.Errorf("%d observers left after SIGTERM", n)
	}
}

func TestCoapObserveDuration(t *testing.T) {
	verifyNoLeaks(t)
	_, base, _ := startTestDevice(t, nil)
	start := time.Now()
	code, out, errOut := runCLI(t, "coap", "observe", "--duration", "400ms", base+"/obs")
	if code != 0 {
		t.Fatalf("exit %d stderr %q", code, errOut)
	}
	if el := time.Since(start); el < 400*time.Millisecond || el > 5*time.Second {
		t.Errorf("ran %v", el)
	}
	if n := strings.Count(out, "n="); n < 2 {
		t.Errorf("got %d notifications in 400ms: %q", n, out)
	}
}

func TestCoapDTLS(t *testing.T) {
	verifyNoLeaks(t)
	key := keys.NewSecret([]byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77})
	sc, err := dtls.Listen("udp", "127.0.0.1:0", dtls.ServerConfig{PSK: dtls.NewPSKStore(map[string]dtls.Secret{"dev-1": key})})
	if err != nil {
		t.Fatal(err)
	}
	_, _, secure := startTestDevice(t, sc)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "hex key", args: []string{"get", "--psk-identity", "dev-1", "--psk-key", "hex:0011223344556677", secure + "/text"}, stdout: "hello\n"},
		{name: "base64 key", args: []string{"get", "--psk-identity", "dev-1", "--psk-key", "base64:ABEiM0RVZnc=", secure + "/json"}, stdout: "{\n  \"a\": 1"},
		{name: "observe over dtls", args: []string{"observe", "--count", "2", "--psk-identity", "dev-1", "--psk-key", "hex:0011223344556677", secure + "/obs"}, stdout: "n="},
		{name: "discover over dtls", args: []string{"discover", "--psk-identity", "dev-1", "--psk-key", "hex:0011223344556677", secure}, stdout: "/obs"},
		{name: "wrong key", args: []string{"get", "--timeout", "1s", "--psk-identity", "dev-1", "--psk-key", "hex:0011223344556678", secure + "/text"}, code: 3, stderr: "DTLS handshake"},
		{name: "unknown identity", args: []string{"get", "--timeout", "1s", "--psk-identity", "dev-9", "--psk-key", "hex:0011223344556677", secure + "/text"}, code: 3, stderr: "DTLS handshake"},
		{name: "bad key syntax", args: []string{"get", "--psk-identity", "dev-1", "--psk-key", "hex:zz", secure + "/text"}, code: 2, stderr: "credentials"},
		{name: "no credentials", args: []string{"get", secure + "/text"}, code: 2, stderr: "credentials"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, append([]string{"coap"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("stdout %q (want %q) stderr %q (want %q)", out, tc.stdout, errOut, tc.stderr)
			}
		})
	}
}

func TestReadPayload(t *testing.T) {
	file := writeFile(t, t.TempDir(), "p.bin", "from file")
	tests := []struct {
		name    string
		f       coapFlags
		stdin   string
		want    string
		wantErr bool
	}{
		{name: "flag", f: coapFlags{payload: "abc"}, want: "abc"},
		{name: "none", want: ""},
		{name: "file", f: coapFlags{file: file}, want: "from file"},
		{name: "stdin", f: coapFlags{file: "-"}, stdin: "from\nstdin", want: "from\nstdin"},
		{name: "both", f: coapFlags{payload: "a", file: file}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readPayload(&tc.f, strings.NewReader(tc.stdin))
			if (err != nil) != tc.wantErr || string(got) != tc.want {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}

func TestParseContentFormat(t *testing.T) {
	tests := []struct {
		in   string
		want message.MediaType
		err  bool
	}{
		{in: "text", want: message.TextPlain},
		{in: "JSON", want: message.AppJSON},
		{in: "cbor", want: message.AppCBOR},
		{in: "senml+json", want: message.AppSenMLJSON},
		{in: "senml", want: message.AppSenMLJSON},
		{in: "senml+cbor", want: message.AppSenMLCBOR},
		{in: "link-format", want: message.AppLinkFormat},
		{in: "octet-stream", want: message.AppOctets},
		{in: "application/json", want: message.AppJSON},
		{in: "112", want: message.AppSenMLCBOR},
		{in: "65000", want: 65000},
		{in: "65536", err: true},
		{in: "yaml", err: true},
		{in: "", err: true},
	}
	for _, tc := range tests {
		got, err := parseContentFormat(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("parseContentFormat(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestFormatOption(t *testing.T) {
	tests := []struct {
		opt  message.Option
		name string
		want string
	}{
		{message.Option{ID: message.ContentFormat, Value: []byte{50}}, "Content-Format", "application/json (50)"},
		{message.Option{ID: message.Accept, Value: nil}, "Accept", "text/plain;charset=utf-8 (0)"},
		{message.Option{ID: message.MaxAge, Value: []byte{0x01, 0x00}}, "Max-Age", "256"},
		{message.Option{ID: message.URIPath, Value: []byte("temp")}, "Uri-Path", `"temp"`},
		{message.Option{ID: message.ETag, Value: []byte{0xbe, 0xef}}, "ETag", "0xbeef"},
		{message.Option{ID: message.IfNoneMatch}, "If-None-Match", "(empty)"},
		// RFC 7959 §2.2: 0x1e = NUM 1, M 1, SZX 6 (1024 bytes).
		{message.Option{ID: message.Block2, Value: []byte{0x1e}}, "Block2", "num=1/more size=1024"},
		{message.Option{ID: 65000, Value: []byte{1}}, "Option 65000", "0x01"},
	}
	for _, tc := range tests {
		if got := optionName(tc.opt.ID); got != tc.name {
			t.Errorf("optionName(%d) = %q, want %q", tc.opt.ID, got, tc.name)
		}
		if got := formatOption(tc.opt); got != tc.want {
			t.Errorf("formatOption(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// FuzzDisplayPayload: response payloads come from devices; rendering them
// must never panic, whatever the Content-Format claims.
func FuzzDisplayPayload(f *testing.F) {
	f.Add(uint16(50), true, []byte(`{"a":[1,2]}`))
	f.Add(uint16(60), true, []byte{0xa1, 0x61, 0x74, 0xf9, 0x3c, 0x00})
	f.Add(uint16(112), true, []byte{0x81, 0xa2, 0x00, 0x61, 0x74, 0x02, 0x01})
	f.Add(uint16(110), true, []byte(`[{"n":"t","v":1}]`))
	f.Add(uint16(0), false, []byte("\x00\xff"))
	f.Add(uint16(40), true, []byte("</a>;rt=x"))
	f.Fuzz(func(t *testing.T, cf uint16, has bool, p []byte) {
		out, err := displayPayload(message.MediaType(cf), has, p)
		if err != nil {
			t.Fatalf("displayPayload error %v", err)
		}
		if len(p) > 0 && len(out) == 0 {
			t.Fatalf("non-empty payload %q rendered as nothing", p)
		}
	})
}

// TestCoapInteropLibcoapServer runs the commands against libcoap's example
// server: its index, discovery and the observable /time resource.
func TestCoapInteropLibcoapServer(t *testing.T) {
	verifyNoLeaks(t)
	base := fmt.Sprintf("coap://%s", peer.StartCoapServer(t))
	var out, errOut string
	testkit.Eventually(t, 5*time.Second, "coap-server-notls to answer", func() bool {
		var code int
		code, out, errOut = runCLI(t, "coap", "get", "--timeout", "300ms", base+"/")
		return code == 0
	})
	if !strings.Contains(out, "libcoap") {
		t.Errorf("index %q", out)
	}
	code, out, errOut := runCLI(t, "coap", "discover", base)
	if code != 0 || !strings.Contains(out, "/time") || !strings.Contains(out, "yes") {
		t.Errorf("discover: exit %d stdout %q stderr %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "coap", "observe", "-v", "--count", "2", "--timeout", "5s", base+"/time")
	if code != 0 || strings.Count(errOut, "Observe=") != 2 || len(strings.Split(strings.TrimSpace(out), "\n")) != 2 {
		t.Errorf("observe /time: exit %d stdout %q stderr %q", code, out, errOut)
	}
	code, _, errOut = runCLI(t, "coap", "get", base+"/nothing-here")
	if code != exitCoAPError || !strings.Contains(errOut, "4.04") {
		t.Errorf("missing resource: exit %d stderr %q", code, errOut)
	}
}

func TestCoapHelpDocumentsExitCodes(t *testing.T) {
	for _, args := range [][]string{{"coap", "--help"}, {"coap", "get", "--help"}, {"coap", "observe", "--help"}, {"coap", "discover", "--help"}} {
		code, out, errOut := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d %s", args, code, errOut)
		}
		for _, want := range []string{"Exit codes:", "0  the response was a success", "1  the response was an error", "2  usage error", "3  timeout"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v help lacks %q", args, want)
			}
		}
		long, _, _ := strings.Cut(out, "Usage:")
		for _, l := range strings.Split(long, "\n") {
			if len(l) > 80 {
				t.Errorf("%v help line longer than 80 columns: %q", args, l)
			}
		}
	}
}

func TestWrapWords(t *testing.T) {
	got := wrapWords("aa bb cc dd", 7, "  ")
	if got != "  aa bb\n  cc dd" {
		t.Errorf("wrapWords = %q", got)
	}
	if got := wrapWords("averyveryverylongword x", 5, ""); got != "averyveryverylongword\nx" {
		t.Errorf("long word: %q", got)
	}
}
