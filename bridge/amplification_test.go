package bridge

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const amplificationRules = `
[[ingress]]
name  = "telemetry"
path  = "/telemetry/{device}/{metric}"
topic = "sensors/{device}/{metric}"
rt    = "telemetry"

[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"
rt    = "config"
`

// rawSource is a plain UDP socket that never answers an Echo challenge: a
// spoofed source, as the bridge sees it.
type rawSource struct {
	t    *testing.T
	conn *net.UDPConn
	to   net.Addr
}

func newRawSource(t *testing.T, to net.Addr) *rawSource {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawSource{t: t, conn: c, to: to}
}

func (s *rawSource) send(m *message.Message) int {
	s.t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.conn.WriteTo(b, s.to); err != nil {
		s.t.Fatal(err)
	}
	return len(b)
}

// collect returns every datagram received until none comes for quiet.
func (s *rawSource) collect(quiet time.Duration) [][]byte {
	var out [][]byte
	buf := make([]byte, 65536)
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(quiet))
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			return out
		}
		out = append(out, bytes.Clone(buf[:n]))
	}
}

func ampGet(mid uint16, path string, opts message.Options) *message.Message {
	return &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: mid, Token: []byte{0xa1, 0xb2}, Options: opts.SetPath(path)}
}

func block2(t *testing.T, num uint32, szx uint8) message.Options {
	t.Helper()
	v, err := block.Option{Num: num, SZX: szx}.Value()
	if err != nil {
		t.Fatal(err)
	}
	return message.Options{}.SetUint(message.Block2, v)
}

// TestAmplificationBoundOverEveryPath measures the response/request byte
// ratio of every answer the bridge gives a plain-UDP source that never
// proves its address, over every resource and path it serves, and requires
// it to be at most 3 (RFC 7252 §11.3).
func TestAmplificationBoundOverEveryPath(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 256) // 4 KiB
	// A device behind a proxy rule, holding the same 4 KiB: proxied answers
	// are bounded as the bridge's own are.
	dev := startDevice(t, "")
	dev.mux.HandleFunc("GET /big", func(w coapside.ResponseWriter, r *coapside.Request) { w.Write([]byte(big)) })
	tb := startBridge(t, amplificationRules+fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s"

[[proxy]]
name    = "devices"
path    = "/devices/{device}/{path...}"
url     = "coap://{device}/{path...}"
forward = true
`, dev.addr), nil)
	publish(t, tb.MQTTAddr(), "config/d1", 1, true, big)
	c := newCoAPClient(t)
	testkit.Eventually(t, 10*time.Second, "the 4 KiB value", func() bool {
		resp, err := c.Get(t.Context(), tb.coapURL("/config/d1"))
		return err == nil && string(resp.Payload) == big
	})
	observe := message.Options{}.SetUint(message.Observe, 0)
	type probe struct {
		name string
		req  *message.Message
		then func()
	}
	probes := []probe{
		{"GET 4 KiB resource", ampGet(1, "/config/d1", nil), nil},
		{"GET 4 KiB resource, Block2 0 SZX 6", ampGet(2, "/config/d1", block2(t, 0, 6)), nil},
		{"GET 4 KiB resource, Block2 3 SZX 6", ampGet(3, "/config/d1", block2(t, 3, 6)), nil},
		{"GET block beyond the end (4.02)", ampGet(4, "/config/d1", block2(t, 100, 6)), nil},
		{"NON GET 4 KiB resource", &message.Message{Type: message.NonConfirmable, Code: message.GET, MessageID: 5, Token: []byte{1}, Options: message.Options{}.SetPath("/config/d1")}, nil},
		{"GET resource without a value (4.04)", ampGet(6, "/config/none", nil), nil},
		{"GET unknown path (4.04)", ampGet(7, "/x", nil), nil},
		{"PUT on a resource (4.05)", &message.Message{Type: message.Confirmable, Code: message.PUT, MessageID: 8, Token: []byte{1}, Options: message.Options{}.SetPath("/config/d1")}, nil},
		{"POST to ingress, empty", &message.Message{Type: message.Confirmable, Code: message.POST, MessageID: 9, Token: []byte{1}, Options: message.Options{}.SetPath("/telemetry/d1/t")}, nil},
		{"unknown critical option (4.02)", ampGet(10, "/config/d1", message.Options{}.Set(9, []byte{1})), nil},
		{"Block1 out of order (4.08)", &message.Message{Type: message.Confirmable, Code: message.POST, MessageID: 11, Token: []byte{1},
			Options: message.Options{}.SetPath("/telemetry/d1/t").SetUint(message.Block1, 5<<4|1<<3), // NUM 5, M, SZX 0
			Payload: []byte("0123456789abcdef")}, nil},
		{"discovery", ampGet(12, "/.well-known/core", nil), nil},
		{"discovery, Block2 0 SZX 6", ampGet(13, "/.well-known/core", block2(t, 0, 6)), nil},
		{"discovery ?rt=config", ampGet(14, "/.well-known/core", message.Options{}.AddString(message.URIQuery, "rt=config")), nil},
		{"discovery ?href=/config*", ampGet(15, "/.well-known/core", message.Options{}.AddString(message.URIQuery, "href=/config*")), nil},
		{"proxy GET 4 KiB device resource", ampGet(17, "/devices/d1/big", nil), nil},
		{"proxy GET, Block2 0 SZX 6", ampGet(18, "/devices/d1/big", block2(t, 0, 6)), nil},
		{"forward proxy GET (Proxy-Uri)", ampGet(19, "", message.Options{}.SetString(message.ProxyURI, "coap://d1/big")), nil},
		{"forward proxy, unknown host (4.03)", ampGet(20, "", message.Options{}.SetString(message.ProxyURI, "coap://x/big")), nil},
		{"forward proxy, http scheme (5.05)", ampGet(21, "", message.Options{}.SetString(message.ProxyURI, "http://d1/big")), nil},
		{"proxy Observe registration", ampGet(22, "/devices/d1/big", observe), nil},
		{"Observe registration + 5 publishes", ampGet(16, "/config/d1", observe), func() {
			for i := 0; i < 5; i++ {
				publish(t, tb.MQTTAddr(), "config/d1", 1, true, big[:4096-i])
			}
		}},
	}
	worst := 0.0
	for _, p := range probes {
		src := newRawSource(t, tb.CoAPAddr())
		n := src.send(p.req)
		if p.then != nil {
			p.then()
		}
		got := src.collect(400 * time.Millisecond)
		for _, d := range got {
			r := float64(len(d)) / float64(n)
			worst = max(worst, r)
			code := "?"
			if h, err := message.ParseHeader(d); err == nil {
				code = h.Code.String()
			}
			t.Logf("%-40s %3d B -> %5d B %-24s %6.2fx", p.name, n, len(d), code, r)
		}
		if len(got) == 0 {
			t.Logf("%-40s %3d B -> no answer", p.name, n)
		}
	}
	t.Logf("worst response/request ratio: %.2f", worst)
	if worst > 3 {
		t.Errorf("worst response/request ratio %.2f, want at most 3", worst)
	}
	if got := testutil.ToFloat64(tb.metrics.observers); got != 0 {
		t.Errorf("%v observers registered by a source that never answered Echo", got)
	}
}

// TestAmplificationEchoGetsFullAnswer: a source that repeats the bridge's
// Echo value gets the whole value in one datagram (and full-size blocks of
// a larger one) from then on.
func TestAmplificationEchoGetsFullAnswer(t *testing.T) {
	tb := startBridge(t, amplificationRules, nil)
	value := strings.Repeat("v", 1000)
	publish(t, tb.MQTTAddr(), "config/d2", 1, true, value)
	c := newCoAPClient(t)
	testkit.Eventually(t, 10*time.Second, "the value", func() bool {
		resp, err := c.Get(t.Context(), tb.coapURL("/config/d2"))
		return err == nil && string(resp.Payload) == value
	})
	src := newRawSource(t, tb.CoAPAddr())
	n := src.send(ampGet(1, "/config/d2", nil))
	got := src.collect(300 * time.Millisecond)
	if len(got) != 1 || len(got[0]) > 3*n {
		t.Fatalf("unverified GET: %d answers", len(got))
	}
	first, err := message.Decode(got[0])
	if err != nil {
		t.Fatal(err)
	}
	// The answer is a small first block, or a 4.01, with an Echo value.
	echo, ok := first.Options.Echo()
	if !ok || len(first.Payload) >= len(value) {
		t.Fatalf("unverified GET of a 1000-byte value answered %v, want a small answer with an Echo", first)
	}
	t.Logf("unverified GET: %d B -> %d B %v", n, len(got[0]), first)
	src.send(ampGet(2, "/config/d2", message.Options{}.SetEcho(echo)))
	got = src.collect(300 * time.Millisecond)
	if len(got) != 1 {
		t.Fatalf("GET with Echo: %d answers", len(got))
	}
	resp, err := message.Decode(got[0])
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != message.Content || string(resp.Payload) != value || resp.Options.Has(message.Block2) {
		t.Fatalf("GET with Echo answered %v with %d bytes, want the whole value", resp.Code, len(resp.Payload))
	}
	// Later requests of the verified source need no Echo.
	src.send(ampGet(3, "/config/d2", nil))
	if got = src.collect(300 * time.Millisecond); len(got) != 1 || len(got[0]) < 1000 {
		t.Fatalf("second GET of the verified source: %d answers", len(got))
	}
	if v := counterValue(t, tb.reg, "bridge_coap_echo_challenges_total"); v < 1 {
		t.Errorf("bridge_coap_echo_challenges_total %v", v)
	}
	if v := counterValue(t, tb.reg, "bridge_coap_echo_verified_total"); v < 1 {
		t.Errorf("bridge_coap_echo_verified_total %v", v)
	}
}
