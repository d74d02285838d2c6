package coapside

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// interopMux serves the resources the libcoap client is pointed at.
func interopMux() *ServeMux {
	mux := NewServeMux()
	mux.HandleFunc("GET /hello", func(w ResponseWriter, r *Request) {
		w.SetContentFormat(message.TextPlain)
		_, _ = w.Write([]byte("world"))
	})
	mux.HandleFunc("/echo", func(w ResponseWriter, r *Request) {
		cf, ok := r.Options.ContentFormat()
		cfs := "none"
		if ok {
			cfs = strconv.Itoa(int(cf))
		}
		_, _ = fmt.Fprintf(w, "%v type=%v cf=%s q=%s payload=%s", r.Method, r.Type, cfs, strings.Join(r.Queries(), ","), r.Payload)
	})
	mux.HandleFunc("GET /accept", func(w ResponseWriter, r *Request) {
		mt, ok := r.Options.Accept()
		if !ok {
			w.SetCode(message.BadRequest)
			return
		}
		w.SetContentFormat(mt)
		_, _ = fmt.Fprintf(w, "accept=%d", mt)
	})
	return mux
}

func runPeer(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
	}
	return string(out)
}

func TestInteropLibcoapClientAgainstOurServer(t *testing.T) {
	bin := peer.Require(t, "coap-client-notls")
	_, addr := startServer(t, interopMux(), ServerOptions{})
	base := "coap://" + addr.String()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"GET CON", []string{base + "/hello"}, "world"},
		{"GET NON", []string{"-N", base + "/hello"}, "world"},
		{"POST CON with payload and Content-Format", []string{"-m", "post", "-t", "50", "-e", `{"t":21}`, base + "/echo"},
			`POST type=CON cf=50 q= payload={"t":21}`},
		{"PUT NON with payload", []string{"-N", "-m", "put", "-t", "text/plain", "-e", "on", base + "/echo"},
			"PUT type=NON cf=0 q= payload=on"},
		{"POST with query string", []string{"-m", "post", "-e", "x", base + "/echo?a=1&b=two"},
			"POST type=CON cf=none q=a=1,b=two payload=x"},
		{"GET with Accept", []string{"-A", "60", base + "/accept"}, "accept=60"},
		{"GET missing resource", []string{base + "/missing"}, "4.04"},
		{"DELETE not allowed", []string{"-m", "delete", base + "/hello"}, "4.05"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runPeer(t, bin, append([]string{"-B", "5"}, tt.args...)...)
			if !strings.Contains(out, tt.want) {
				t.Fatalf("coap-client output %q does not contain %q", out, tt.want)
			}
		})
	}
}

func TestInteropOurClientAgainstLibcoapServer(t *testing.T) {
	addr := peer.StartCoapServer(t)
	c, err := NewClient(ClientOptions{LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	base := "coap://" + addr.String()
	check := func(resp *Response, err error) func(code message.Code) *Response {
		return func(code message.Code) *Response {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != code {
				t.Fatalf("code %v, want %v (payload %q)", resp.Code, code, resp.Payload)
			}
			return resp
		}
	}
	resp := check(c.Get(ctx, base+"/time"))(message.Content)
	if len(resp.Payload) == 0 {
		t.Fatal("GET /time returned no payload")
	}
	check(c.Get(ctx, base+"/time", NonConfirmable()))(message.Content)
	payload := []byte("hello-from-go " + time.Now().Format(time.RFC3339Nano))
	// The first PUT creates the resource, the second changes it.
	check(c.Put(ctx, base+"/example_data", message.TextPlain, []byte("first")))(message.Created)
	check(c.Put(ctx, base+"/example_data", message.TextPlain, payload))(message.Changed)
	resp = check(c.Get(ctx, base+"/example_data"))(message.Content)
	if !bytes.Equal(resp.Payload, payload) {
		t.Fatalf("GET after PUT = %q, want %q", resp.Payload, payload)
	}
	// libcoap 4.3 does not allow DELETE on /example_data.
	check(c.Delete(ctx, base+"/example_data"))(message.MethodNotAllowed)
	// DELETE /time is answered with an empty ACK and no response: the client
	// stops retransmitting and waits for a separate response until its deadline.
	// With 40 ms ACK_TIMEOUT and 2 retransmissions an unacknowledged CON
	// would fail with ErrTimeout after about 280 ms.
	fast := newTestClient(t)
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := fast.Delete(short, base+"/time"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DELETE /time err = %v", err)
	}
	if got := fast.Endpoint().Stats().Retransmissions.Load(); got != 0 {
		t.Fatalf("retransmitted %d times after the empty ACK", got)
	}
	check(c.Get(ctx, base+"/does-not-exist"))(message.NotFound)
	resp = check(c.Get(ctx, base+"/.well-known/core"))(message.Content)
	if cf, _ := resp.Options.ContentFormat(); cf != message.AppLinkFormat || !bytes.Contains(resp.Payload, []byte("</time>")) {
		t.Fatalf("discovery: cf %v payload %q", cf, resp.Payload)
	}
}

// TestInteropObserveLibcoapServerRestart observes libcoap's /time (a
// notification every second, Max-Age 1) and power-cycles the server: killed
// with SIGKILL, started again on the same port. The restarted server has no
// observers and numbers from 2 again; the client's re-registration (Max-Age
// plus the margin after the last notification) is answered with that low
// number, which must be delivered at once, not dropped as stale until the
// new numbers pass the old ones or 128 s go by (RFC 7641 §3.4).
func TestInteropObserveLibcoapServerRestart(t *testing.T) {
	srv := peer.StartCoapServerProcess(t)
	// RFC 7252 default transmission parameters: a re-registration sent
	// while the server is down is retransmitted until it is back.
	c, err := NewClient(ClientOptions{LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	notes := make(chan Notification, 64)
	req, err := NewRequest(message.GET, "coap://"+srv.Addr.String()+"/time", nil)
	if err != nil {
		t.Fatal(err)
	}
	restarts := make(chan uint32, 4)
	oo := ObservationOptions{
		ReregisterMargin: 500 * time.Millisecond,
		OnRestart:        func(seq, _ uint32) { restarts <- seq },
	}
	o, err := c.ObserveRequest(testCtx(t), req, func(n Notification) {
		select {
		case notes <- n:
		default:
		}
	}, oo)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Wait()
	defer o.end(ErrCanceled)
	// Let the sequence grow past the value a fresh server starts from.
	var last uint32
	for deadline := time.Now().Add(10 * time.Second); last < 5; {
		select {
		case n := <-notes:
			last = n.Seq
		case <-time.After(time.Until(deadline)):
			t.Fatalf("libcoap /time notifications stopped at seq %d", last)
		}
	}
	srv.Kill()
	for len(notes) > 0 { // sent before the power loss
		last = (<-notes).Seq
	}
	srv.Restart()
	restarted := time.Now()
	select {
	case n := <-notes:
		if n.Seq >= last {
			t.Fatalf("first notification after the restart has seq %d, after %d before it: the restarted sequence was dropped", n.Seq, last)
		}
		t.Logf("notification from the restarted server %v after the restart (seq %d, was %d)", time.Since(restarted).Round(time.Millisecond), n.Seq, last)
	case <-time.After(10 * time.Second):
		t.Fatalf("no notification within 10 s of the restart (last seq %d)", last)
	}
	select {
	case seq := <-restarts:
		t.Logf("restart reported at seq %d", seq)
	case <-time.After(time.Second):
		t.Error("sequence restart not reported")
	}
	if err := o.Err(); err != nil {
		t.Fatalf("observation ended: %v", err)
	}
}
