package bridge

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // substrings of the errors, in order; empty = valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"remote broker", func(c *Config) { c.MQTT.Broker = "tcp://127.0.0.1:1883" }, nil},
		{"wss broker", func(c *Config) { c.MQTT.Broker = "wss://broker.example:443/mqtt" }, nil},
		{"bad broker scheme", func(c *Config) { c.MQTT.Broker = "http://x:1" }, []string{`mqtt.broker: unsupported scheme "http"`}},
		{"broker not a url", func(c *Config) { c.MQTT.Broker = "localhost" }, []string{`mqtt.broker: must be "embedded" or a broker URL`}},
		{"bad coap listen", func(c *Config) { c.CoAP.Listen = "5683" }, []string{`coap.listen: not a host:port address: "5683"`}},
		{"coap disabled", func(c *Config) { c.CoAP.Listen = "" }, nil},
		{"dtls without keys", func(c *Config) { c.CoAP.DTLS.Listen = ":5684" }, []string{"coap.dtls.listen: DTLS needs psk_file"}},
		{"dtls psk", func(c *Config) { c.CoAP.DTLS.Listen = ":5684"; c.CoAP.DTLS.PSKFile = "k.toml" }, nil},
		{"cert without key", func(c *Config) { c.CoAP.DTLS.Listen = ":5684"; c.CoAP.DTLS.CertFile = "c.pem" }, []string{"cert_file and key_file go together"}},
		{"dtls files without listener", func(c *Config) { c.CoAP.DTLS.PSKFile = "psk.toml" }, []string{"coap.dtls.psk_file: set, but coap.dtls.listen is empty"}},
		{"tls files for a plain broker", func(c *Config) { c.MQTT.Broker = "tcp://broker:1883"; c.MQTT.CAFile = "ca.pem" }, []string{"mqtt.ca_file: set, but tcp:// is not TLS"}},
		{"empty client id", func(c *Config) { c.MQTT.ClientID = "" }, []string{"mqtt.client_id: must not be empty"}},
		{"several", func(c *Config) { c.Log.Level = "x"; c.Log.Format = "y"; c.HTTP.Listen = "nope" }, []string{
			"http.listen", "log.level", "log.format"}},
		{"mqtt section", func(c *Config) {
			c.MQTT.Broker = "ssl://broker:8883"
			c.MQTT.BufferSize = -1
			c.MQTT.MaxPayload = -1
			c.MQTT.CertFile = "c.pem"
		}, []string{
			"mqtt.buffer_size", "mqtt.max_payload", "mqtt.cert_file"}},
		{"rate limit", func(c *Config) { c.CoAP.RateLimit = 0.5; c.CoAP.RateBurst = 10 }, nil},
		{"negative rate limit", func(c *Config) { c.CoAP.RateLimit = -1; c.CoAP.RateBurst = -2; c.CoAP.RateBlock = -time.Second }, []string{
			"coap.rate_limit: must not be negative", "coap.rate_burst: must not be negative", "coap.rate_block: must not be negative"}},
		{"queue mode", func(c *Config) {
			c.Devices.Awake = time.Second
			c.Devices.QueueSize = 5
			c.Devices.QueueTTL = time.Minute
		}, nil},
		{"negative queue mode keys", func(c *Config) {
			c.Devices.Awake = -time.Second
			c.Devices.QueueSize = -1
			c.Devices.QueueTTL = -time.Minute
		}, []string{
			"devices.awake: must not be negative (0 means 5s), got -1s",
			"devices.queue_size: must not be negative (0 means 100), got -1",
			"devices.queue_ttl: must not be negative (0 means 10m0s), got -1m0s"}},
		{"state dir missing", func(c *Config) { c.State.Dir = "/nonexistent/bridge-state" }, []string{
			"state.dir: stat /nonexistent/bridge-state: no such file or directory"}},
		{"state dir a file", func(c *Config) { c.State.Dir = "config_test.go" }, []string{"state.dir: config_test.go is not a directory"}},
		{"state dir", func(c *Config) { c.State.Dir = "." }, nil},
		{"per-device metrics", func(c *Config) { c.Metrics.PerDevice = true; c.Metrics.PerDeviceMax = 10 }, nil},
		{"negative per_device_max", func(c *Config) { c.Metrics.PerDeviceMax = -1 }, []string{
			"metrics.per_device_max: must not be negative (0 means 1000), got -1"}},
		{"empty rule glob", func(c *Config) { c.Rules = []string{" "} }, []string{"rules[0]: empty rule file pattern"}},
		{"status topic with the embedded broker", func(c *Config) { c.MQTT.StatusTopic = "bridge/st" }, []string{"mqtt.status_topic: set, but mqtt.broker is \"embedded\""}},
		{"status topic off with the embedded broker", func(c *Config) { c.MQTT.StatusTopic = "-" }, nil},
		{"embedded broker keys with a remote broker", func(c *Config) { c.MQTT.Broker = "tcp://broker:1883"; c.MQTT.Embedded.AuthFile = "auth.toml" }, []string{
			"mqtt.embedded.auth_file: set, but mqtt.broker is a remote broker"}},
		{"burst without a limit", func(c *Config) { c.CoAP.RateBurst = 5 }, []string{"coap.rate_burst: set, but coap.rate_limit is 0"}},
		{"port out of range", func(c *Config) { c.CoAP.Listen = ":99999"; c.HTTP.Listen = "127.0.0.1:-1" }, []string{
			`coap.listen: port "99999": want 0-65535`, `http.listen: port "-1": want 0-65535`}},
		{"port by service name", func(c *Config) { c.HTTP.Listen = "127.0.0.1:http" }, nil},
		{"tiny max_payload", func(c *Config) { c.MQTT.MaxPayload = 100 }, []string{"mqtt.max_payload: 100 bytes is too small"}},
		{"smallest max_payload", func(c *Config) { c.MQTT.MaxPayload = 1024 }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			tt.mod(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			var ces ConfigErrors
			if !errors.As(err, &ces) || len(ces) != len(tt.want) {
				t.Fatalf("got %d errors %v, want %d", len(ces), err, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(ces[i].Error(), w) {
					t.Errorf("error %d = %q, want it to contain %q", i, ces[i].Error(), w)
				}
			}
		})
	}
}

// TestValidateBrokerURLAsTheClientDoes: a broker URL the MQTT client would
// refuse at start is refused by the config check too.
func TestValidateBrokerURLAsTheClientDoes(t *testing.T) {
	for _, broker := range []string{"wss://]0", "tcp://host:0", "tcp://host:99999", "tcp://"} {
		c := Defaults()
		c.MQTT.Broker = broker
		c.SetDefaults()
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "mqtt.broker") {
			t.Errorf("broker %q: %v, want an mqtt.broker error", broker, err)
		}
	}
}
