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

// TestDeviceClientReadBuffer: the sockets the bridge requests and observes
// devices on (coap and coaps) get the large receive buffer, as the listener does, so that
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
	if _, err := d.client(true); err != nil {
		t.Fatal(err)
	}
	for name, conn := range map[string]net.PacketConn{"coap": c.Endpoint().Conn(), "coaps": d.securePC} {
		u, ok := conn.(*net.UDPConn)
		if !ok {
			t.Fatalf("%s device client on %T, want a UDP socket", name, conn)
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
			t.Fatalf("%s device client's receive buffer %d bytes, want at least %d", name, got, want)
		}
	}
}
