package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// benchDevice is one in-process CoAP device of "bench commands" and
// "bench observe": a server on its own loopback UDP port whose handler
// echoes PUT/POST payloads and whose resource at path is observable,
// with the payload set by the benchmark.
type benchDevice struct {
	name string
	addr *net.UDPAddr
	srv  *coapside.Server
	obs  *coapside.ObserveServer
	cur  atomic.Pointer[[]byte] // the observable representation
}

// benchMaxAge is the Max-Age of the observable representation, seconds.
const benchMaxAge = 2

// A device's deduplication table and memory of NON notifications are
// sized for one peer, the bridge: the defaults, sized for a server with
// many clients, made 100 devices take 800 MB. 2,048 exchanges cover the
// last seconds of a device's share of any load this process can send,
// longer than the bridge waits before retransmitting.
const (
	benchDedupCapacity = 2048
	benchResetMemory   = 256
)

// benchFleet runs the devices of one benchmark; Close stops all of them.
type benchFleet struct {
	devices []*benchDevice
	path    string
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// benchFleetOptions says where the devices listen and what they do.
type benchFleetOptions struct {
	Count    int
	Host     string
	BasePort int // device i listens on BasePort+i; 0: free ports
	Prefix   string
	Path     string // the observable resource, e.g. /bench
	// Handled is called with each PUT/POST payload a device receives.
	Handled func(device int, payload []byte)
}

// newBenchFleet opens every device's socket and starts serving.
func newBenchFleet(o benchFleetOptions) (*benchFleet, error) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &benchFleet{path: o.Path, cancel: cancel}
	for i := range o.Count {
		port := 0
		if o.BasePort > 0 {
			port = o.BasePort + i
		}
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(o.Host), Port: port})
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("device %s%d: %w", o.Prefix, i, err)
		}
		obs, err := coapside.NewObserveServer(coapside.ObserveOptions{Workers: 1, MaxObservers: 16, ResetMemory: benchResetMemory})
		if err != nil {
			_ = conn.Close()
			f.Close()
			return nil, err
		}
		d := &benchDevice{name: fmt.Sprintf("%s%d", o.Prefix, i), addr: conn.LocalAddr().(*net.UDPAddr), obs: obs}
		empty := []byte{}
		d.cur.Store(&empty)
		mux := coapside.NewServeMux()
		mux.HandleFunc("GET "+o.Path, obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, _ *coapside.Request) {
			// A short Max-Age makes an observer that stopped hearing from
			// this port (the devices of an earlier run are gone)
			// register again soon (RFC 7641 §3.3.1).
			*w.Options() = w.Options().SetUint(message.MaxAge, benchMaxAge)
			w.SetContentFormat(message.TextPlain)
			_, _ = w.Write(*d.cur.Load())
		})).ServeCOAP)
		idx := i
		echo := func(w coapside.ResponseWriter, r *coapside.Request) {
			if o.Handled != nil {
				o.Handled(idx, r.Payload)
			}
			w.SetCode(message.Changed)
			w.SetContentFormat(message.TextPlain)
			_, _ = w.Write(r.Payload)
		}
		mux.HandleFunc("PUT /{rest...}", echo)
		mux.HandleFunc("POST /{rest...}", echo)
		d.srv = &coapside.Server{Handler: mux, Options: coapside.ServerOptions{
			EndpointOptions: coapside.EndpointOptions{MaxPeers: 16, DisableBatching: true, DedupCapacity: benchDedupCapacity},
		}}
		f.devices = append(f.devices, d)
		f.wg.Add(2)
		go func() {
			defer f.wg.Done()
			_ = obs.Run(ctx)
		}()
		go func() {
			defer f.wg.Done()
			if err := d.srv.Serve(conn); err != nil && !errors.Is(err, coapside.ErrServerClosed) {
				cancel() // a device that stopped serving ends the run's notifiers too
			}
		}()
	}
	return f, nil
}

// Observed reports how many devices have at least one observer of path.
func (f *benchFleet) Observed() int {
	n := 0
	for _, d := range f.devices {
		if d.obs.Observers(f.path) > 0 {
			n++
		}
	}
	return n
}

// Notify sets device i's representation and notifies its observers; it
// returns how many observers were notified.
func (f *benchFleet) Notify(i int, payload []byte) int {
	d := f.devices[i]
	d.cur.Store(&payload)
	return d.obs.Notify(f.path)
}

// Superseded is how many representations the devices replaced before
// sending them (RFC 7641 §4.5: an observer gets the latest state).
func (f *benchFleet) Superseded() uint64 {
	var n uint64
	for _, d := range f.devices {
		n += d.obs.Stats().Superseded
	}
	return n
}

// Close stops every device and waits for its goroutines.
func (f *benchFleet) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, d := range f.devices {
		_ = d.srv.Shutdown(ctx)
	}
	f.cancel()
	f.wg.Wait()
}

// deviceRules is the [[device]] entries of n devices at base+i.
func deviceRules(prefix, host string, base, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "[[device]]\nname = %q\nurl  = \"coap://%s\"\n\n", fmt.Sprintf("%s%d", prefix, i), net.JoinHostPort(host, fmt.Sprint(base+i)))
	}
	return b.String()
}
