package bridge

import (
	"net"
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
// and is counted in bridge_coap_rate_limited_total); 0 turns it off.
func TestCoAPRateLimitConfig(t *testing.T) {
	for _, tc := range []struct {
		name        string
		rate        float64
		burst       int
		wantLimited bool
		maxAnswered int
	}{
		{"off", 0, 0, false, 40},
		{"on", 1, 5, true, 5 + 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := startBridge(t, "", func(c *Config, _ *Options) {
				c.CoAP.RateLimit = tc.rate
				c.CoAP.RateBurst = tc.burst
			})
			conn, err := net.DialUDP("udp", nil, tb.CoAPAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			const n = 40
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
			if tc.wantLimited {
				if tooMany != 1 || answered > tc.maxAnswered || limited < float64(n-tc.maxAnswered) {
					t.Fatalf("rate limit %v burst %d: %d answered, %d 4.29, %v counted as limited", tc.rate, tc.burst, answered, tooMany, limited)
				}
				return
			}
			if tooMany != 0 || answered != n || limited != 0 {
				t.Fatalf("rate limit off: %d of %d answered, %d 4.29, %v counted as limited", answered, n, tooMany, limited)
			}
		})
	}
}
