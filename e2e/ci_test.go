package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// TestCIStopsOnlyTheMosquittoService runs .ci/mosquitto-service, with which
// .ci/run stops the broker that installing Debian's mosquitto package
// starts: it ends the process the service's pid file names and leaves any
// other mosquitto, such as a contributor's own broker, running. A stale pid
// file naming another program ends nothing.
func TestCIStopsOnlyTheMosquittoService(t *testing.T) {
	ssd := peer.Require(t, "start-stop-daemon")
	const daemon = "/usr/sbin/mosquitto" // the path the Debian service runs
	if p, err := filepath.EvalSymlinks(peer.Require(t, "mosquitto")); err != nil || p != daemon {
		peer.Unavailable(t, "mosquitto is %s, not the Debian package's %s", p, daemon)
	}
	script, err := filepath.Abs("../.ci/mosquitto-service")
	if err != nil {
		t.Fatal(err)
	}
	own := peer.StartMosquitto(t, 0, "") // a broker a contributor runs by hand

	// The "service": started as the init script starts it, with a pid file.
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "mosquitto.pid")
	svcPort := peer.FreeTCPPort(t)
	conf := fmt.Sprintf("listener %d 127.0.0.1\n", svcPort)
	if os.Getuid() == 0 {
		conf += "user root\n"
	}
	confFile := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(ssd, "--start", "--quiet", "--background", "--make-pidfile", "--pidfile", pidfile,
		"--exec", daemon, "--", "-c", confFile).CombinedOutput(); err != nil {
		t.Fatalf("start the service broker: %v: %s", err, out)
	}
	svcPID := readPID(t, pidfile)
	t.Cleanup(func() {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", svcPID)); err == nil && exe == daemon {
			_ = syscall.Kill(svcPID, syscall.SIGKILL)
		}
	})
	testkit.Eventually(t, 10*time.Second, "the service broker accepts connections", func() bool { return tcpUp(svcPort) })

	service := func(arg string) int {
		t.Helper()
		cmd := exec.Command(script, arg)
		cmd.Env = append(os.Environ(), "MOSQUITTO_SERVICE_PIDFILE="+pidfile)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &exit):
			return exit.ExitCode()
		}
		t.Fatalf("mosquitto-service %s: %v: %s", arg, err, out)
		return -1
	}

	if code := service("active"); code != 0 {
		t.Fatalf("active = exit %d with the service running, want 0", code)
	}
	if code := service("stop"); code != 0 {
		t.Fatalf("stop = exit %d, want 0", code)
	}
	if tcpUp(svcPort) {
		t.Fatal("the service broker still runs after stop")
	}
	if !tcpUp(own.Port) {
		t.Fatal("stop ended the contributor's own broker")
	}
	if code := service("active"); code == 0 {
		t.Fatal("active = exit 0 after stop")
	}

	// A stale pid file naming another program.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = other.Wait(); close(exited) }()
	t.Cleanup(func() { _ = other.Process.Kill(); <-exited })
	if err := os.WriteFile(pidfile, []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := service("active"); code == 0 {
		t.Fatal("active = exit 0 for a pid file naming sleep")
	}
	if code := service("stop"); code != 0 {
		t.Fatalf("stop with a stale pid file = exit %d, want 0", code)
	}
	select {
	case <-exited:
		t.Fatal("stop ended the program a stale pid file names")
	default:
	}
	if !tcpUp(own.Port) {
		t.Fatal("stop ended the contributor's own broker")
	}
}

// readPID reads the pid a pid file holds.
func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %v", file, err)
	}
	return pid
}
