package bridge

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// brokerProcess is a mosquitto started by a test on a loopback port.
type brokerProcess struct {
	t    *testing.T
	conf string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func startMosquitto(t *testing.T) *brokerProcess {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if os.Getenv("BRIDGE_E2E_STRICT") == "1" {
			t.Fatalf("mosquitto is required (BRIDGE_E2E_STRICT=1): %v", err)
		}
		t.Skip("mosquitto not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\n", port)
	if os.Getuid() == 0 {
		conf += "user root\n"
	}
	p := &brokerProcess{t: t, conf: filepath.Join(dir, "mosquitto.conf"), port: port}
	if err := os.WriteFile(p.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "-c", p.conf)
	p.start(bin)
	t.Cleanup(p.kill)
	return p
}

func (p *brokerProcess) start(bin string) {
	p.t.Helper()
	p.cmd = exec.Command(bin, "-c", p.conf)
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(p.cmd, p.done)
	eventually(p.t, 10*time.Second, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", p.addr())
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (p *brokerProcess) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// kill stops the broker at once (SIGKILL), as a crash would.
func (p *brokerProcess) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

func (p *brokerProcess) restart() {
	p.t.Helper()
	bin, _ := exec.LookPath("mosquitto")
	p.start(bin)
}

// TestBrokerOutage runs the bridge against mosquitto, kills the broker and
// brings it back: QoS 0 pushes are buffered and delivered on reconnect, a
// QoS 1 push is answered 5.03 with Max-Age (the device retries), and
// readiness follows the connection.
func TestBrokerOutage(t *testing.T) {
	broker := startMosquitto(t)
	rules := `
[[ingress]]
name    = "q0"
path    = "/q0/{n}"
methods = ["POST"]
topic   = "q0/{n}"
retain  = true

[[ingress]]
name    = "q1"
path    = "/q1/{n}"
methods = ["POST"]
topic   = "q1/{n}"
qos     = 1
`
	tb := startBridge(t, rules, func(c *Config, o *Options) {
		c.MQTT.Broker = "tcp://" + broker.addr()
		c.MQTT.ClientID = fmt.Sprintf("bridge-outage-%d", time.Now().UnixNano())
		c.MQTT.Embedded.Listen = ""
		o.PublishTimeout = 500 * time.Millisecond
		o.HandoverTimeout = 100 * time.Millisecond
	})
	c := newCoAPClient(t)
	post := func(path string) *coapside.Response {
		t.Helper()
		resp, err := c.Post(t.Context(), tb.coapURL(path), message.TextPlain, []byte(path))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		return resp
	}
	if resp := post("/q1/before"); resp.Code != message.Changed {
		t.Fatalf("with the broker up: %v", resp.Code)
	}

	broker.kill()
	eventually(t, 10*time.Second, "not ready while the broker is down", func() bool { return !tb.Ready() })
	for i := 0; i < 5; i++ {
		if resp := post(fmt.Sprintf("/q0/m%d", i)); resp.Code != message.Changed {
			t.Fatalf("QoS 0 push during the outage: %v, want 2.04 (buffered)", resp.Code)
		}
	}
	if got := testutil.ToFloat64(tb.metrics.buffered.WithLabelValues("q0")); got != 5 {
		t.Errorf("buffered %v, want 5", got)
	}
	resp := post("/q1/during")
	if resp.Code != message.ServiceUnavailable || resp.Options.MaxAge() != 5 {
		t.Fatalf("QoS 1 push during the outage: %v Max-Age %d, want 5.03 with Max-Age 5", resp.Code, resp.Options.MaxAge())
	}

	broker.restart()
	eventually(t, 30*time.Second, "ready after the broker is back", tb.Ready)
	sub := subscribe(t, broker.addr(), "q0/#", 0)
	got := map[string]bool{}
	for len(got) < 5 {
		m := sub.next(t, 10*time.Second)
		got[m.Topic()] = true
	}
	for i := 0; i < 5; i++ {
		if !got[fmt.Sprintf("q0/m%d", i)] {
			t.Fatalf("q0/m%d not delivered after reconnect: %v", i, got)
		}
	}
	if resp := post("/q1/after"); resp.Code != message.Changed {
		t.Fatalf("after reconnect: %v", resp.Code)
	}
}
