// Package peer finds and starts the real peers that tests run against —
// libcoap's tools, mosquitto and its clients — so that every package's
// tests treat a missing peer the same way: skipped locally, a failure when
// BRIDGE_E2E_STRICT=1 (as .ci/run sets).
package peer

import (
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

	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// StrictEnv is the environment variable that turns a missing peer from a
// skip into a failure.
const StrictEnv = "BRIDGE_E2E_STRICT"

// Require returns the path of the peer binary name. When it is missing the
// test is skipped, or fails when BRIDGE_E2E_STRICT=1.
func Require(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(StrictEnv) == "1" {
			tb.Fatalf("peer binary %s is required (%s=1): %v", name, StrictEnv, err)
		}
		tb.Skipf("peer binary %s not installed", name)
	}
	return p
}

// Unavailable ends a test that cannot run here because something it needs
// is missing (an IPv6 loopback, a peer's modules): it is skipped, or fails
// when BRIDGE_E2E_STRICT=1, where every test must run.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(StrictEnv) == "1" {
		tb.Fatalf("%s (required: %s=1)", msg, StrictEnv)
		return
	}
	tb.Skip(msg)
}

// handedOut holds the ports Free*Port returned in this process: the kernel
// may hand the same ephemeral port to two listeners opened and closed in a
// row, and two components of one test given one port collide.
var handedOut = struct {
	sync.Mutex
	ports map[string]bool
}{ports: map[string]bool{}}

// freePort asks the kernel for a loopback port of network until it gets one
// this process has not handed out before.
func freePort(tb testing.TB, network string) int {
	tb.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		var port int
		switch network {
		case "tcp":
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				tb.Fatal(err)
			}
			port = l.Addr().(*net.TCPAddr).Port
			l.Close()
		default:
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				tb.Fatal(err)
			}
			port = c.LocalAddr().(*net.UDPAddr).Port
			c.Close()
		}
		key := network + "/" + strconv.Itoa(port)
		if !handedOut.ports[key] {
			handedOut.ports[key] = true
			return port
		}
	}
	tb.Fatalf("no %s port that was not handed out before", network)
	return 0
}

// FreeTCPPort returns a loopback TCP port that was free a moment ago and
// was not returned before in this process.
func FreeTCPPort(tb testing.TB) int {
	tb.Helper()
	return freePort(tb, "tcp")
}

// FreeUDPPort returns a loopback UDP port that was free a moment ago and
// was not returned before in this process.
func FreeUDPPort(tb testing.TB) int {
	tb.Helper()
	return freePort(tb, "udp")
}

// Mosquitto is a broker process started by a test on a loopback port.
type Mosquitto struct {
	tb   testing.TB
	bin  string
	conf string
	// Port is the broker's TCP port on 127.0.0.1.
	Port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *testkit.SyncBuffer
}

// StartMosquitto writes a config with a listener on a loopback port (0: a
// free one) followed by the extra lines (mosquitto 2 refuses anonymous
// clients unless they say "allow_anonymous true"), starts the broker, waits
// until it accepts connections, and kills it at the end of the test.
func StartMosquitto(tb testing.TB, port int, extra string) *Mosquitto {
	tb.Helper()
	if port == 0 {
		port = FreeTCPPort(tb)
	}
	dir := tb.TempDir()
	m := &Mosquitto{tb: tb, bin: Require(tb, "mosquitto"), Port: port}
	conf := fmt.Sprintf("listener %d 127.0.0.1\n", port)
	if os.Getuid() == 0 {
		conf += "user root\n" // keep access to the test's temp dir
	}
	conf += fmt.Sprintf("persistence_location %s/\nlog_dest stdout\nlog_type error\nlog_type warning\n", dir)
	conf += extra
	m.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	m.start()
	tb.Cleanup(m.Kill)
	return m
}

// WaitSaved waits until the broker has saved its persistence file after
// since, so that state it had then (sessions, subscriptions) survives a
// Kill. The extra config lines must turn persistence on with an
// autosave_interval; mosquitto saves on whole-second ticks, so a fixed
// sleep is not enough.
func (m *Mosquitto) WaitSaved(tb testing.TB, since time.Time, timeout time.Duration) {
	tb.Helper()
	db := filepath.Join(filepath.Dir(m.conf), "mosquitto.db")
	deadline := time.Now().Add(timeout)
	for {
		if st, err := os.Stat(db); err == nil && st.ModTime().After(since) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("mosquitto did not save %s within %v\n%s", db, timeout, m.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is host:port of the broker.
func (m *Mosquitto) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.Port) }

// URL is the tcp:// URL of the broker.
func (m *Mosquitto) URL() string { return "tcp://" + m.Addr() }

func (m *Mosquitto) start() {
	m.tb.Helper()
	m.mu.Lock()
	m.out = new(testkit.SyncBuffer)
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
		c, err := net.DialTimeout("tcp", m.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			m.tb.Fatalf("mosquitto exited: %v\n%s", err, m.Output())
		default:
		}
		if time.Now().After(deadline) {
			m.tb.Fatalf("mosquitto did not come up on port %d: %v\n%s", m.Port, err, m.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Output returns what the broker logged so far.
func (m *Mosquitto) Output() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.out == nil {
		return ""
	}
	return m.out.String()
}

// Kill stops the broker with SIGKILL, as a crash would: no clean shutdown,
// no Last Will suppression, no final persistence save.
func (m *Mosquitto) Kill() { m.signal(syscall.SIGKILL) }

// Stop stops the broker with SIGTERM, as an orderly shutdown would: it
// closes its client connections and saves its persistence first.
func (m *Mosquitto) Stop() { m.signal(syscall.SIGTERM) }

func (m *Mosquitto) signal(sig syscall.Signal) {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused broker handles sig now
	<-exited
}

// Pause stops the broker with SIGSTOP: its connections stay open but
// nothing answers, as from a hung host. Kill and Stop still end it.
func (m *Mosquitto) Pause() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		_ = m.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// Restart starts the broker again on the same port and config.
func (m *Mosquitto) Restart() { m.start() }

// StartCoapServer runs libcoap's coap-server-notls on a free loopback port
// with the extra arguments, waits until it answers a CoAP ping, stops it at
// the end of the test and returns its address.
func StartCoapServer(tb testing.TB, extra ...string) *net.UDPAddr {
	tb.Helper()
	return StartCoapServerProcess(tb, extra...).Addr
}

// CoapServer is a coap-server-notls process started by a test, which can be
// killed and started again on the same port, as a device that loses power.
type CoapServer struct {
	// Addr is the server's address on 127.0.0.1.
	Addr *net.UDPAddr

	tb   testing.TB
	bin  string
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *testkit.SyncBuffer
}

// StartCoapServerProcess is StartCoapServer returning the process, for tests
// that kill and restart it.
func StartCoapServerProcess(tb testing.TB, extra ...string) *CoapServer {
	tb.Helper()
	port := FreeUDPPort(tb)
	s := &CoapServer{
		Addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
		tb:   tb,
		bin:  Require(tb, "coap-server-notls"),
		args: append([]string{"-A", "127.0.0.1", "-p", strconv.Itoa(port), "-v", "0"}, extra...),
	}
	s.start()
	tb.Cleanup(s.Kill)
	return s
}

func (s *CoapServer) start() {
	s.tb.Helper()
	s.mu.Lock()
	s.out = new(testkit.SyncBuffer)
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		s.mu.Unlock()
		s.tb.Fatalf("start coap-server-notls: %v", err)
	}
	cmd, exited := s.cmd, make(chan struct{})
	s.exited = exited
	s.mu.Unlock()
	go func() { _ = cmd.Wait(); close(exited) }() // ends when the process does
	if err := waitCoapPing(s.Addr, exited, 10*time.Second); err != nil {
		s.tb.Fatalf("coap-server-notls on port %d: %v\n%s", s.Addr.Port, err, s.Output())
	}
}

// Kill stops the server with SIGKILL, as a power loss would: it keeps no
// state and says nothing to its clients.
func (s *CoapServer) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Restart starts the server again on the same port with the same arguments
// and waits until it answers.
func (s *CoapServer) Restart() { s.start() }

// Output returns what the server printed so far in its current run.
func (s *CoapServer) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// waitCoapPing sends CoAP pings (an empty CON, RFC 7252 §4.3) to addr until
// a Reset answers, the process exits or d passes.
func waitCoapPing(addr *net.UDPAddr, exited <-chan struct{}, d time.Duration) error {
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(d)
	buf := make([]byte, 64)
	for mid := uint16(1); ; mid++ {
		//  Ver=1 T=CON TKL=0 | Code 0.00 | Message ID
		ping := []byte{0x40, 0x00, byte(mid >> 8), byte(mid)}
		if _, err := c.Write(ping); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		//  Ver=1 T=RST → 0x70, same Message ID
		if err == nil && n >= 4 && buf[0]&0xf0 == 0x70 && buf[2] == ping[2] && buf[3] == ping[3] {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before answering")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to CoAP ping within %v", d)
		}
	}
}
