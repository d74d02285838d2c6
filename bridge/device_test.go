package bridge

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// fakeDevice is a CoAP server standing in for a device.
type fakeDevice struct {
	addr net.Addr
	srv  *coapside.Server
	mux  *coapside.ServeMux

	mu       sync.Mutex
	requests []recorded
	got      chan recorded
}

type recorded struct {
	method  message.Code
	path    string
	payload string
	cf      int
	from    net.Addr // where the request came from
}

func startDevice(t *testing.T, addr string) *fakeDevice {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDevice{addr: conn.LocalAddr(), mux: coapside.NewServeMux(), got: make(chan recorded, 100)}
	d.srv = &coapside.Server{Handler: coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		rec := recorded{method: r.Method, path: r.Path(), payload: string(r.Payload), cf: -1, from: r.Peer}
		if cf, ok := r.Options.ContentFormat(); ok {
			rec.cf = int(cf)
		}
		d.mu.Lock()
		d.requests = append(d.requests, rec)
		d.mu.Unlock()
		select {
		case d.got <- rec:
		default:
		}
		d.mux.ServeCOAP(w, r)
	})}
	go d.srv.Serve(conn)
	t.Cleanup(func() { d.srv.Close() })
	return d
}

// pusher returns a client that sends from the device's own socket, as a
// device behind NAT does: what it sends opens the path back to it.
func (d *fakeDevice) pusher(t *testing.T) *coapside.Client {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, "device serving", func() bool { return len(d.srv.Endpoints()) == 1 })
	c, err := coapside.NewClient(coapside.ClientOptions{Endpoint: d.srv.Endpoints()[0], Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (d *fakeDevice) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.requests)
}
