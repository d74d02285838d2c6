package bridge

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/prometheus/client_golang/prometheus"
)

// counterValue reads a counter without labels from reg; -1 when absent.
func counterValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return -1
}

// TestCoAPRateLimitConfig: coap.rate_limit and coap.rate_burst reach the
// CoAP server (a burst of requests from one source gets 4.29 with Max-Age
// and is counted in bridge_coap_rate_limited_total); 0 turns it off. With
// coap.rate_block a source refused more than 1,000 times in a second is
// blocked, counted in bridge_coap_sources_blocked_total (Linux); 35
// refusals are not enough.
func TestCoAPRateLimitConfig(t *testing.T) {
	for _, tc := range []struct {
		name        string
		rate        float64
		burst       int
		block       time.Duration
		n           int
		wantLimited bool
		wantBlocked bool
		maxAnswered int
	}{
		{"off", 0, 0, DefaultRateBlock, 40, false, false, 40},
		{"on", 1, 5, 0, 40, true, false, 5 + 2},
		{"on, blocking, not flooded", 1, 5, DefaultRateBlock, 40, true, false, 5 + 2},
		{"on, blocking, flooded", 1, 5, DefaultRateBlock, 1100, true, runtime.GOOS == "linux", 5 + 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := startBridge(t, "", func(c *Config, _ *Options) {
				c.CoAP.RateLimit = tc.rate
				c.CoAP.RateBurst = tc.burst
				c.CoAP.RateBlock = tc.block
			})
			conn, err := net.DialUDP("udp", nil, tb.CoAPAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			n := tc.n
			for i := range n {
				req := message.Message{Type: message.Confirmable, Code: message.GET, MessageID: uint16(i), Token: []byte{byte(i)}}
				req.Options = req.Options.SetPath("/nothing/here")
				b, _ := req.MarshalBinary()
				if _, err := conn.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			answered, tooMany := 0, 0
			buf := make([]byte, 1500)
			for {
				_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				k, err := conn.Read(buf)
				if err != nil {
					break
				}
				m, err := message.Decode(buf[:k])
				if err != nil {
					t.Fatal(err)
				}
				if m.Code == message.TooManyRequests {
					tooMany++
					if age, err := m.Options.Uint(message.MaxAge); err != nil || age < 1 {
						t.Errorf("4.29 with Max-Age %d (%v)", age, err)
					}
					continue
				}
				answered++
			}
			limited := counterValue(t, tb.reg, "bridge_coap_rate_limited_total")
			wantBlocked := 0.0
			if tc.wantBlocked {
				wantBlocked = 1
			}
			if b := counterValue(t, tb.reg, "bridge_coap_sources_blocked_total"); b != wantBlocked {
				t.Fatalf("sources blocked %v, want %v", b, wantBlocked)
			}
			if tc.wantLimited {
				// Once the source is blocked the kernel drops what it had
				// not yet queued: those are counted there, not by the
				// limiter (how many depends on how far the reader was
				// behind the sender).
				dropped := 0.0
				if tc.wantBlocked {
					dropped = counterValue(t, tb.reg, "bridge_coap_kernel_drops_total")
				}
				if tooMany != 1 || answered > tc.maxAnswered || limited+dropped < float64(n-tc.maxAnswered) {
					t.Fatalf("rate limit %v burst %d: %d answered, %d 4.29, %v counted as limited, %v dropped by the kernel", tc.rate, tc.burst, answered, tooMany, limited, dropped)
				}
				return
			}
			if tooMany != 0 || answered != n || limited != 0 {
				t.Fatalf("rate limit off: %d of %d answered, %d 4.29, %v counted as limited", answered, n, tooMany, limited)
			}
		})
	}
}

// TestCoAPRateLimitAppliesToDTLSPeers: the limit counts requests per DTLS
// peer address too; beyond the burst a device gets 4.29 with Max-Age.
func TestCoAPRateLimitAppliesToDTLSPeers(t *testing.T) {
	pskFile := filepath.Join(t.TempDir(), "psk.toml")
	if err := os.WriteFile(pskFile, []byte("[[psk]]\nidentity = \"dev1\"\nkey = \"secret-1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startBridge(t, secureRules, func(c *Config, _ *Options) {
		c.CoAP.DTLS.Listen = "127.0.0.1:0"
		c.CoAP.DTLS.PSKFile = pskFile
		c.CoAP.RateLimit = 0.1 // a token every 10 s
		c.CoAP.RateBurst = 2
	})
	dev1 := pskClient(t, "dev1", "secret-1")
	url := "coaps://" + tb.DTLSAddr().String() + "/who/x"
	for i := range 2 {
		resp, err := dev1.Post(t.Context(), url, message.TextPlain, []byte("ok"))
		if err != nil || resp.Code != message.Changed {
			t.Fatalf("request %d within the burst: %v %v", i, resp, err)
		}
	}
	resp, err := dev1.Post(t.Context(), url, message.TextPlain, []byte("over the limit"))
	if err != nil || resp.Code != message.TooManyRequests {
		t.Fatalf("request beyond the burst: %v %v, want 4.29", resp, err)
	}
	if age, err := resp.Options.Uint(message.MaxAge); err != nil || age < 1 || age > 10 {
		t.Fatalf("Max-Age %d (%v), want 1..10 s", age, err)
	}
	if got := counterValue(t, tb.reg, "bridge_coap_rate_limited_total"); got != 1 {
		t.Fatalf("bridge_coap_rate_limited_total = %v, want 1", got)
	}
}
