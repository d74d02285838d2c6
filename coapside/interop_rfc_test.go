package coapside

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"

	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// libcoapClient runs coap-client-notls with args and returns its stdout.
func libcoapClient(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	bin := peer.Require(t, "coap-client-notls")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("coap-client-notls %v: %v\nstdout: %s\nstderr: %s", args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// rfcInteropServer serves an observable counter, a 3000-byte resource, an
// upload sink and discovery, for libcoap's client.
type rfcInteropServer struct {
	obs      *ObserveServer
	addr     string
	counter  *counterResource
	big      []byte
	mu       sync.Mutex
	uploaded []byte
}

func startRFCInteropServer(t *testing.T) *rfcInteropServer {
	t.Helper()
	s := &rfcInteropServer{counter: &counterResource{value: []byte("0")}, big: bigBody(3000)}
	obs, err := NewObserveServer(ObserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.obs = obs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- obs.Run(ctx) }()
	mux := NewServeMux()
	mux.HandleResource("GET /obs", obs.Observable(s.counter), linkformat.Resource{ResourceTypes: []string{"counter"}, Observable: true})
	mux.HandleResource("GET /big", HandlerFunc(func(w ResponseWriter, _ *Request) { _, _ = w.Write(s.big) }),
		linkformat.Resource{ResourceTypes: []string{"big"}, Size: 3000})
	mux.HandleResource("PUT /upload", HandlerFunc(func(w ResponseWriter, r *Request) {
		s.mu.Lock()
		s.uploaded = append([]byte(nil), r.Payload...)
		s.mu.Unlock()
	}), linkformat.Resource{ResourceTypes: []string{"sink"}})
	_, addr := startServer(t, mux, ServerOptions{})
	s.addr = addr.String()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s
}

func TestInteropLibcoapObservesOurServer(t *testing.T) {
	s := startRFCInteropServer(t)
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				s.counter.set([]byte("<" + strconv.Itoa(i) + ">"))
				s.obs.Notify("/obs")
			}
		}
	}()
	out := libcoapClient(t, 15*time.Second, "-s", "3", "-B", "5", "-m", "get", "coap://"+s.addr+"/obs")
	// coap-client deregisters when its -s time is up (RFC 7641 §3.6).
	testkit.Eventually(t, 2*time.Second, "libcoap deregistration", func() bool { return s.obs.Observers("/obs") == 0 })
	close(stop)
	<-ticked
	var values []int
	for _, f := range strings.FieldsFunc(out, func(r rune) bool { return r == '<' || r == '>' || r == '\n' }) {
		if v, err := strconv.Atoi(f); err == nil {
			values = append(values, v)
		}
	}
	if len(values) < 4 {
		t.Fatalf("libcoap saw %d values: %q", len(values), out)
	}
	for i := 1; i < len(values); i++ {
		if values[i] <= values[i-1] {
			t.Errorf("values not increasing: %v", values)
			break
		}
	}
}

func TestInteropLibcoapBlockwiseWithOurServer(t *testing.T) {
	s := startRFCInteropServer(t)
	out := libcoapClient(t, 15*time.Second, "-b", "64", "-m", "get", "coap://"+s.addr+"/big")
	if got := strings.TrimRight(out, "\n"); got != string(s.big) {
		t.Errorf("GET -b 64: %d bytes, want %d", len(got), len(s.big))
	}
	file := filepath.Join(t.TempDir(), "body")
	body := bytes.Repeat([]byte("0123456789abcdef"), 100) // 1600 bytes
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	libcoapClient(t, 15*time.Second, "-b", "64", "-m", "put", "-f", file, "coap://"+s.addr+"/upload")
	s.mu.Lock()
	got := s.uploaded
	s.mu.Unlock()
	if !bytes.Equal(got, body) {
		t.Errorf("PUT -b 64: handler got %d bytes, want %d", len(got), len(body))
	}
}

func TestInteropLibcoapDiscoversOurServer(t *testing.T) {
	s := startRFCInteropServer(t)
	out := libcoapClient(t, 15*time.Second, "-m", "get", "coap://"+s.addr+"/.well-known/core?rt=counter")
	links, err := linkformat.ParseString(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	if len(links) != 1 || links[0].Target != "/obs" || !links[0].Has("obs") {
		t.Errorf("filtered discovery: %q", out)
	}
	out = libcoapClient(t, 15*time.Second, "-m", "get", "coap://"+s.addr+"/.well-known/core")
	links, _ = linkformat.ParseString(strings.TrimSpace(out))
	if len(links) != 3 {
		t.Errorf("full discovery: %q", out)
	}
}

func TestInteropOurClientObservesLibcoapTime(t *testing.T) {
	addr := peer.StartCoapServer(t)
	c := newBlockClient(t, ClientBlockwiseOptions{})
	fn, ch := collect(64)
	o, err := c.Observe(testCtx(t), fmt.Sprintf("coap://%s/time", addr), fn)
	if err != nil {
		t.Fatal(err)
	}
	first := nextNote(t, ch)
	var second Notification
	select {
	case second = <-ch:
	case <-time.After(4 * time.Second):
		t.Fatal("no notification from libcoap /time")
	}
	if !first.HasSeq || !second.HasSeq || second.Seq == first.Seq {
		t.Errorf("sequence numbers %d %d", first.Seq, second.Seq)
	}
	if err := o.Cancel(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	o.Wait()
	// Drain anything in flight, then expect silence.
	for len(ch) > 0 {
		<-ch
	}
	noNote(t, ch, 2500*time.Millisecond)
}

func TestInteropOurClientBlockwiseAndDiscoveryLibcoap(t *testing.T) {
	addr := peer.StartCoapServer(t)
	c := newBlockClient(t, ClientBlockwiseOptions{})
	url := fmt.Sprintf("coap://%s/example_data", addr)
	body := bytes.Repeat([]byte("block-wise "), 250) // 2750 bytes
	resp, err := c.Put(testCtx(t), url, message.TextPlain, body)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Code.IsSuccess() {
		t.Fatalf("PUT: %v %q", resp.Code, resp.Payload)
	}
	resp, err = c.Get(testCtx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.Payload, body) {
		t.Errorf("GET back %d bytes, want %d", len(resp.Payload), len(body))
	}
	links, err := c.Discover(testCtx(t), fmt.Sprintf("coap://%s", addr))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(targets(links), "/time") {
		t.Errorf("libcoap discovery: %v", targets(links))
	}
	obsLinks, err := c.Discover(testCtx(t), fmt.Sprintf("coap://%s", addr), "obs")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(targets(obsLinks), "/time") || len(obsLinks) >= len(links) {
		t.Errorf("obs filter: %v of %v", targets(obsLinks), targets(links))
	}
}

// TestInteropLibcoapObservesLargeResource has coap-client observe a
// resource larger than one block: each notification is block 0 with Block2
// and ETag, and coap-client fetches the rest (RFC 7959 §3.4).
func TestInteropLibcoapObservesLargeResource(t *testing.T) {
	s := startRFCInteropServer(t)
	mk := func(i int) []byte {
		return append([]byte("<"+strconv.Itoa(i)+">"), bytes.Repeat([]byte("."), 1500)...)
	}
	s.counter.set(mk(0))
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				s.counter.set(mk(i))
				s.obs.Notify("/obs")
			}
		}
	}()
	out := libcoapClient(t, 15*time.Second, "-s", "3", "-B", "5", "-b", "256", "-m", "get", "coap://"+s.addr+"/obs")
	close(stop)
	<-ticked
	var values []int
	for _, f := range strings.FieldsFunc(out, func(r rune) bool { return r == '<' || r == '>' || r == '.' || r == '\n' }) {
		if v, err := strconv.Atoi(f); err == nil {
			values = append(values, v)
		}
	}
	if len(values) < 3 || !slices.IsSorted(values) {
		t.Fatalf("libcoap saw %v", values)
	}
	t.Logf("representations seen: %v", values)
	// coap-client prints each reassembled body; on a busy machine a body
	// may be cut short when a newer notification overtakes its block
	// fetches, or when -s runs out, so most (not all) must be complete.
	complete := 0
	parts := strings.Split(out, "<")
	for _, part := range parts[1:] {
		if strings.Count(part, ".") == 1500 {
			complete++
		}
	}
	if complete < 3 {
		t.Errorf("only %d of %d representations have their whole 1500-byte body", complete, len(values))
	}
}
