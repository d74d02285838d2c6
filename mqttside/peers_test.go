package mqttside

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// peer returns the path of a peer binary. Without it the test is skipped,
// or fails when BRIDGE_E2E_STRICT=1 (CI).
func peer(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("BRIDGE_E2E_STRICT") == "1" {
			tb.Fatalf("peer binary %s required (BRIDGE_E2E_STRICT=1): %v", name, err)
		}
		tb.Skipf("peer binary %s not installed", name)
	}
	return p
}

// eventually polls cond until it holds or the timeout passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// freePort returns a currently unused 127.0.0.1 TCP port.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// mosquitto is a broker process started by a test.
type mosquitto struct {
	tb   testing.TB
	bin  string
	dir  string
	conf string
	Port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *bytes.Buffer
}

// startMosquitto writes a config with the listener on a loopback port
// (0: a free one) followed by extra lines, starts the broker and waits
// until it accepts connections.
func startMosquitto(tb testing.TB, port int, extra string) *mosquitto {
	tb.Helper()
	if port == 0 {
		port = freePort(tb)
	}
	m := &mosquitto{tb: tb, bin: peer(tb, "mosquitto"), dir: tb.TempDir(), Port: port}
	conf := fmt.Sprintf("listener %d 127.0.0.1\n", m.Port)
	if os.Getuid() == 0 {
		conf += "user root\n" // keep access to the test's temp dir
	}
	conf += fmt.Sprintf("persistence_location %s/\nlog_dest stdout\nlog_type error\nlog_type warning\n", m.dir)
	conf += extra
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	m.start()
	tb.Cleanup(m.Kill)
	return m
}

// URL is the tcp:// URL of the broker.
func (m *mosquitto) URL() string { return "tcp://127.0.0.1:" + strconv.Itoa(m.Port) }

func (m *mosquitto) start() {
	m.tb.Helper()
	m.mu.Lock()
	m.out = new(bytes.Buffer)
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		m.mu.Unlock()
		m.tb.Fatalf("start mosquitto: %v", err)
	}
	cmd, exited := m.cmd, make(chan struct{})
	m.exited = exited
	m.mu.Unlock()
	go func() { _ = cmd.Wait(); close(exited) }() // ends when the process does
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			m.tb.Fatalf("mosquitto exited: %v\n%s", err, m.output())
		default:
		}
		if time.Now().After(deadline) {
			m.tb.Fatalf("mosquitto did not come up on port %d: %v\n%s", m.Port, err, m.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *mosquitto) output() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.out == nil {
		return ""
	}
	return m.out.String()
}

// Kill stops the broker with SIGKILL: no clean shutdown, no Last Will
// suppression, no final persistence save.
func (m *mosquitto) Kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Restart starts the broker again on the same port and config.
func (m *mosquitto) Restart() { m.start() }

// runPeer runs a peer client binary with a timeout and returns its output.
func runPeer(tb testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, peer(tb, name), args...).CombinedOutput()
	return string(out), err
}
