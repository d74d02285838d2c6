package bridge

import (
	"net"
	"sync"
	"testing"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
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
		rec := recorded{method: r.Method, path: r.Path(), payload: string(r.Payload), cf: -1}
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

func (d *fakeDevice) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.requests)
}
