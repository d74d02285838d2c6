package mqttside

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestBrokerURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"tcp://broker", "tcp://broker:1883"},
		{"mqtt://broker:1884", "mqtt://broker:1884"},
		{"SSL://broker", "ssl://broker:8883"},
		{"tls://10.0.0.1", "tls://10.0.0.1:8883"},
		{"mqtts://[::1]", "mqtts://[::1]:8883"},
		{"ws://broker/mqtt", "ws://broker:80/mqtt"},
		{"wss://broker/mqtt", "wss://broker:443/mqtt"},
		{"tcp://user:secret@broker:1883", "tcp://user:xxxxx@broker:1883"},
	}
	for _, tt := range tests {
		u, err := brokerURL(tt.in)
		if err != nil {
			t.Errorf("brokerURL(%q): %v", tt.in, err)
			continue
		}
		if got := u.Redacted(); got != tt.want {
			t.Errorf("brokerURL(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"", "broker:1883", "http://broker", "tcp://", "tcp://:1883", "unix:///tmp/s", "%zz", "tcp://h:0", "tcp://h:65536", "wss://]0", "tcp://a]b:1883"} {
		if _, err := brokerURL(bad); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("brokerURL(%q) = %v, want ErrInvalidOptions", bad, err)
		}
	}
}

func TestRemoteOptionsValidate(t *testing.T) {
	base := func() RemoteOptions {
		o := RemoteOptions{Broker: "tcp://b"}
		o.SetDefaults()
		return o
	}
	tests := []struct {
		name string
		mod  func(*RemoteOptions)
	}{
		{"zero buffer", func(o *RemoteOptions) { o.BufferSize = -1 }},
		{"inflight too big", func(o *RemoteOptions) { o.MaxInflight = 70000 }},
		{"payload too big", func(o *RemoteOptions) { o.MaxPayload = 300 << 20 }},
		{"backoff inverted", func(o *RemoteOptions) { o.MaxBackoff = o.MinBackoff / 2 }},
		{"cert without key", func(o *RemoteOptions) { o.TLS.CertFile = "c.pem" }},
		{"status topic wildcard", func(o *RemoteOptions) { o.StatusTopic = "bridge/+/status" }},
	}
	for _, tt := range tests {
		o := base()
		tt.mod(&o)
		if err := o.Validate(); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: Validate = %v, want ErrInvalidOptions", tt.name, err)
		}
	}
	o := base()
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if o.StatusTopic != DefaultClientID+"/status" {
		t.Errorf("default status topic %q", o.StatusTopic)
	}
}

// FuzzBrokerURL checks that broker URL parsing never panics and that an
// accepted URL has a known scheme, a host and a port.
func FuzzBrokerURL(f *testing.F) {
	for _, s := range []string{"tcp://b", "wss://[::1]/mqtt", "ssl://u:p@h:1", "ws://h:x", "tcp://%41", "mqtt://h:99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := brokerURL(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("error %v does not wrap ErrInvalidOptions", err)
			}
			return
		}
		if !strings.Contains("tcp mqtt ssl tls mqtts ws wss", u.Scheme) || u.Hostname() == "" {
			t.Fatalf("accepted %q as scheme %q host %q", s, u.Scheme, u.Hostname())
		}
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || port == "0" {
			t.Fatalf("accepted %q without a port: %q", s, u.Host)
		}
	})
}
