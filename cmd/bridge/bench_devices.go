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
// echoes PUT/POST payloads and whose resources at the fleet's paths are
// observable, with payloads set by the benchmark.
type benchDevice struct {
	name string
	addr *net.UDPAddr
	srv  *coapside.Server
	obs  *coapside.ObserveServer
	cur  []atomic.Pointer[[]byte] // the representation of each observable path
}

// benchMaxAge is the default Max-Age of the observable representations.
const benchMaxAge = 60 * time.Second

// benchTables sizes a device's deduplication table and its memory of NON
// notifications for a fleet of n: a device hears from one peer, the
// bridge, and the defaults (16,384 and 8,192 entries, about 5 MB, sized
// for a server with many clients) made 100 devices take 800 MB and a fleet
// of 10,000 tens of GB. Small fleets get 2,048 exchanges per device, the
// last seconds of a device's share of any load this process can send
// (longer than the bridge waits before retransmitting a command); large
// ones share about 200,000 entries, at least 64 a device.
func benchTables(n int) (dedup, reset int) {
	per := 200_000 / max(n, 1)
	return min(max(per, 64), 2048), min(max(per/8, 64), 256)
}

// benchFleet runs the devices of one benchmark; Close stops all of them.
type benchFleet struct {
	devices []*benchDevice
	paths   []string
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// benchFleetOptions says where the devices listen and what they do.
type benchFleetOptions struct {
	Count    int
	Host     string
	BasePort int // device i listens on BasePort+i; 0: free ports
	Prefix   string
	Paths    []string // the observable resources of every device, e.g. /bench
	// MaxAge is the Max-Age of the observable representations, whole
	// seconds; 0: benchMaxAge.
	MaxAge time.Duration
	// Handled is called with each PUT/POST payload a device receives.
	Handled func(device int, payload []byte)
}

// newBenchFleet opens every device's socket and starts serving.
func newBenchFleet(o benchFleetOptions) (*benchFleet, error) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &benchFleet{paths: o.Paths, cancel: cancel}
	maxAge := uint32(benchMaxAge / time.Second)
	if o.MaxAge > 0 {
		maxAge = uint32(o.MaxAge / time.Second)
	}
	// A registration that is renewed (RFC 7641 §3.3.1) replaces itself;
	// the headroom is for an observer registering again under a new token.
	maxObs := max(16, 4*len(o.Paths))
	dedupCapacity, resetMemory := benchTables(o.Count)
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
		obs, err := coapside.NewObserveServer(coapside.ObserveOptions{Workers: 1, MaxObservers: maxObs, ResetMemory: resetMemory})
		if err != nil {
			_ = conn.Close()
			f.Close()
			return nil, err
		}
		d := &benchDevice{name: fmt.Sprintf("%s%d", o.Prefix, i), addr: conn.LocalAddr().(*net.UDPAddr), obs: obs,
			cur: make([]atomic.Pointer[[]byte], len(o.Paths))}
		mux := coapside.NewServeMux()
		for p, path := range o.Paths {
			cur := &d.cur[p]
			empty := []byte{}
			cur.Store(&empty)
			mux.HandleFunc("GET "+path, obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, _ *coapside.Request) {
				// An observer that stopped hearing from this port (the
				// devices of an earlier run are gone) registers again
				// after Max-Age and its margin (RFC 7641 §3.3.1).
				*w.Options() = w.Options().SetUint(message.MaxAge, maxAge)
				w.SetContentFormat(message.TextPlain)
				_, _ = w.Write(*cur.Load())
			})).ServeCOAP)
		}
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
			EndpointOptions: coapside.EndpointOptions{MaxPeers: 16, DisableBatching: true, DedupCapacity: dedupCapacity},
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

// Observed reports how many observable resources (a device's path) have
// at least one observer.
func (f *benchFleet) Observed() int {
	n := 0
	for _, d := range f.devices {
		for _, p := range f.paths {
			if d.obs.Observers(p) > 0 {
				n++
			}
		}
	}
	return n
}

// Notify sets the representation of device i's path p and notifies its
// observers; it returns how many observers were notified.
func (f *benchFleet) Notify(i, p int, payload []byte) int {
	d := f.devices[i]
	d.cur[p].Store(&payload)
	return d.obs.Notify(f.paths[p])
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
