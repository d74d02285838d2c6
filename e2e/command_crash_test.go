package e2e

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// countingDevice is a CoAP server that records every command payload it is
// sent (a sequence number) and answers 2.04.
type countingDevice struct {
	addr *net.UDPAddr
	mu   sync.Mutex
	seen map[int]int // sequence number -> times received
}

func startCountingDevice(t *testing.T) *countingDevice {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &countingDevice{addr: conn.LocalAddr().(*net.UDPAddr), seen: map[int]int{}}
	srv := &coapside.Server{Handler: coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		n, err := strconv.Atoi(string(r.Payload))
		if err != nil {
			return
		}
		d.mu.Lock()
		d.seen[n]++
		d.mu.Unlock()
	})}
	done := make(chan struct{})
	go func() { _ = srv.Serve(conn); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return d
}

// counts returns how many distinct sequence numbers below n arrived and
// how many arrived more than once.
func (d *countingDevice) counts(n int) (distinct, dups int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 0; i < n; i++ {
		switch c := d.seen[i]; {
		case c > 1:
			dups++
			fallthrough
		case c == 1:
			distinct++
		}
	}
	return distinct, dups
}

func (d *countingDevice) missing(n int) []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var m []int
	for i := 0; i < n; i++ {
		if d.seen[i] == 0 {
			m = append(m, i)
		}
	}
	return m
}

// TestE2ECommandsSurviveBridgeSIGKILL: QoS 1 commands stream through
// mosquitto to a device while the bridge is killed with SIGKILL and
// restarted with the same client ID (a persistent session). Every command
// must reach the device at least once: a command is acknowledged to the
// broker only after its CoAP exchange, so whatever the bridge held when it
// died is redelivered by the broker after the restart.
func TestE2ECommandsSurviveBridgeSIGKILL(t *testing.T) {
	// The broker must hold every command that arrives while the bridge is
	// down; mosquitto's default (1000 queued per client) could drop some.
	broker := peer.StartMosquitto(t, 0, "allow_anonymous true\nmax_queued_messages 0\n")
	dev := startCountingDevice(t)
	rules := fmt.Sprintf(`
[[device]]
name = "dev"
url  = "coap://%s"

[[command]]
name    = "set"
filter  = "cmd/{device}/set"
method  = "PUT"
url     = "coap://{device}/set"
timeout = "10s"
`, dev.addr)
	b := startBridgeBin(t, bridgeSetup{rules: rules, broker: broker.URL()})

	pub := paho.NewClient(paho.NewClientOptions().AddBroker(broker.URL()).
		SetClientID(fmt.Sprintf("e2e-pub-%d", time.Now().UnixNano())))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	defer pub.Disconnect(100)

	// About 500 commands per second, in a goroutine owned by this test.
	const n = 1500
	pubErr := make(chan error, 1)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var toks []paho.Token
		for i := 0; i < n; {
			<-tick.C
			for j := 0; j < 5 && i < n; j, i = j+1, i+1 {
				toks = append(toks, pub.Publish("cmd/dev/set", 1, false, strconv.Itoa(i)))
			}
		}
		for i, tok := range toks {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				pubErr <- fmt.Errorf("publish %d: %v", i, tok.Error())
				return
			}
		}
		pubErr <- nil
	}()

	testkit.Eventually(t, 20*time.Second, "a third of the commands at the device", func() bool {
		d, _ := dev.counts(n)
		return d >= n/3
	})
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-b.done
	before, _ := dev.counts(n)
	b.proc = start(t, b.dir, nil, bridgeBin(t), "run")
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", b.httpPort), 20*time.Second)

	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, dups := dev.counts(n)
		if got == n {
			t.Logf("all %d commands reached the device (%d at the kill, %d more than once)", n, before, dups)
			return
		}
		if time.Now().After(deadline) {
			miss := dev.missing(n)
			t.Fatalf("%d of %d commands never reached the device (%d at the kill), e.g. %v", len(miss), n, before, miss[:min(len(miss), 20)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
