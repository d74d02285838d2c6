package bridge

import (
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/rules"
	"golang.org/x/sys/unix"
)

// TestDeviceClientReadBuffer: the socket the bridge requests and observes
// devices on gets the large receive buffer, as the listener does, so that
// a burst of notifications while the bridge is busy waits in the kernel
// instead of being dropped there (a dropped NON notification is lost).
func TestDeviceClientReadBuffer(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skip(err)
	}
	rmemMax, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	want := min(rmemMax, coapReadBuffer) // the kernel reports twice what it was asked
	if want <= 256<<10 {
		t.Skipf("net.core.rmem_max %d: no room above the default buffer", rmemMax)
	}
	d := newDeviceClients(&atomic.Pointer[rules.Set]{}, coapside.EndpointOptions{}, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { d.Close() })
	c, err := d.client(false)
	if err != nil {
		t.Fatal(err)
	}
	u, ok := c.Endpoint().Conn().(*net.UDPConn)
	if !ok {
		t.Fatalf("device client on %T, want a UDP socket", c.Endpoint().Conn())
	}
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var serr error
	if err := rc.Control(func(fd uintptr) { got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if got < want {
		t.Fatalf("device client's receive buffer %d bytes, want at least %d", got, want)
	}
}
