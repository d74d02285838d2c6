package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// Resource paths of a simulated device.
const (
	simPathTemp     = "/sensors/temp"
	simPathHumidity = "/sensors/humidity"
	simPathBattery  = "/battery"
	simPathLED      = "/actuators/led"
)

// simDevice is one simulated sensor node: a CoAP server (and optionally a
// coaps one) with observable sensors, a pollable battery and an LED.
type simDevice struct {
	name     string
	identity string // PSK identity accepted on the coaps listener
	format   simFormat
	interval time.Duration
	psk      dtls.Secret
	log      *slog.Logger
	// pushDTLS: the device pushes over coaps (--push coaps://): its one
	// socket is a DTLS client with the PSK identity, and it serves its
	// resources on the sessions it opens.
	pushDTLS bool
	// dtlsSessions keeps the DTLS session to the push server across the
	// socket's incarnations, so a wake resumes it (abbreviated handshake)
	// instead of a full handshake, as a device keeps it in RAM.
	dtlsSessions *dtls.ClientSessionCache

	stateMu sync.Mutex
	rng     *rand.Rand
	temp    sensorModel
	hum     sensorModel
	battery batteryModel
	tempV   float64
	humV    float64
	batV    float64
	led     bool

	netMu    sync.Mutex
	addr     *net.UDPAddr // plain CoAP address; the port is kept across reboots
	dtlsAddr *net.UDPAddr // coaps address, nil without a PSK
	cur      *simBoot     // the running incarnation, nil while down
	boots    int
	asleep   bool // the radio is off (--sleep): cur is nil until the next wake
}

// simBoot is one incarnation of a device's network side: rebooting throws
// it away with its observers and sequence numbers and builds a new one.
type simBoot struct {
	srv    *coapside.Server
	obs    *coapside.ObserveServer
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// ticks counts sensor updates since this boot. A new registration's
	// Observe value starts from it, so the numbers start low again after
	// a reboot, as on a device without a clock that survives power-down.
	ticks atomic.Uint32
}

func newSimDevice(name, identity string, addr, dtlsAddr *net.UDPAddr, o *simOptions, seed uint64, index int) *simDevice {
	r := rand.New(rand.NewPCG(seed, uint64(index)))
	d := &simDevice{
		name: name, identity: identity, format: o.Format, interval: o.Interval,
		psk: o.PSK, log: o.Logger.With("device", name),
		rng: r, addr: addr, dtlsAddr: dtlsAddr,
		pushDTLS: o.pushesDTLS(),
	}
	sp := 19 + r.Float64()*4
	d.temp = sensorModel{value: sp, setPoint: sp, drift: 0.08, noise: 0.04, min: -40, max: 85}
	hp := 40 + r.Float64()*20
	d.hum = sensorModel{value: hp, setPoint: hp, drift: 0.3, noise: 0.2, min: 0, max: 100}
	d.battery = batteryModel{level: 80 + r.Float64()*20, drain: 0.02}
	d.tick()
	return d
}

// tick advances every sensor by one interval.
func (d *simDevice) tick() {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	d.tempV = d.temp.next(d.rng)
	d.humV = d.hum.next(d.rng)
	d.batV = d.battery.next(d.rng)
}

// maxAge is the Max-Age of sensor representations: two intervals, so an
// observer that misses notifications (after a reboot) re-registers soon
// (RFC 7641 §3.3.1).
func (d *simDevice) maxAge() uint32 {
	return uint32(max(1, math.Ceil(2*d.interval.Seconds())))
}

// Addr returns the device's plain CoAP address.
func (d *simDevice) Addr() *net.UDPAddr {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	return d.addr
}

// DTLSAddr returns the device's coaps address, or nil.
func (d *simDevice) DTLSAddr() *net.UDPAddr {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	return d.dtlsAddr
}

// Observers returns how many observers the running incarnation has on path.
func (d *simDevice) Observers(path string) int {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	if d.cur == nil {
		return 0
	}
	return d.cur.obs.Observers(path)
}

// start binds the listeners and serves. The first start fixes the ports
// (a port of 0 picks a free one) so that reboots come back on the same ones.
func (d *simDevice) start() error {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	return d.bootLocked()
}

func (d *simDevice) bootLocked() error {
	// A simulated device is small: fleets of thousands share one process,
	// so its tables are sized for a handful of clients, not a gateway.
	b := &simBoot{}
	obs, err := coapside.NewObserveServer(coapside.ObserveOptions{
		Workers: 2, MaxObservers: 1024, ResetMemory: 256, Logger: d.log,
		FirstSeq: b.ticks.Load,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.obs, b.cancel = obs, cancel
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		_ = obs.Run(ctx)
	}()
	b.srv = &coapside.Server{Handler: d.mux(obs), Options: coapside.ServerOptions{
		// Two idle readers keep one ready while the other hands a request
		// over; single datagram reads avoid a batch buffer per reader.
		IdleReaders:     2,
		MaxConcurrent:   32,
		EndpointOptions: coapside.EndpointOptions{MaxPeers: 256, DedupCapacity: 256, DisableBatching: true, Logger: d.log},
	}}

	conn, err := net.ListenUDP("udp", d.addr)
	if err != nil {
		cancel()
		b.wg.Wait()
		return fmt.Errorf("sim %s: listen %s: %w", d.name, d.addr, err)
	}
	d.addr = conn.LocalAddr().(*net.UDPAddr)
	if d.pushDTLS {
		if d.dtlsSessions == nil {
			d.dtlsSessions = dtls.NewClientSessionCache(4, 0)
		}
		cc, err := dtls.NewClientConnOn(conn, dtls.ClientConfig{
			Credentials:  dtls.Credentials{PSKIdentity: d.identity, PSK: d.psk},
			SessionCache: d.dtlsSessions,
		})
		if err != nil {
			_ = conn.Close()
			cancel()
			b.wg.Wait()
			return fmt.Errorf("sim %s: coaps client: %w", d.name, err)
		}
		d.serve(b, cc)
	} else {
		d.serve(b, conn)
	}
	if d.dtlsAddr != nil {
		udp, err := net.ListenUDP("udp", d.dtlsAddr)
		if err == nil {
			var sc *dtls.ServerConn
			sc, err = dtls.NewServerConn(udp, dtls.ServerConfig{
				PSK: dtls.NewPSKStore(map[string]dtls.Secret{d.identity: d.psk}),
			})
			if err == nil {
				d.dtlsAddr = sc.LocalAddr().(*net.UDPAddr)
				d.serve(b, sc)
			}
		}
		if err != nil {
			d.haltBoot(b)
			return fmt.Errorf("sim %s: coaps listen %s: %w", d.name, d.dtlsAddr, err)
		}
	}
	d.cur = b
	d.boots++
	return nil
}

func (d *simDevice) serve(b *simBoot, conn net.PacketConn) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err := b.srv.Serve(conn); err != nil && !errors.Is(err, coapside.ErrServerClosed) {
			d.log.Error("sim device stopped serving", "addr", conn.LocalAddr().String(), "err", err)
		}
	}()
}

// haltBoot stops an incarnation: the server (its sockets close), then the
// notifier; it waits for every goroutine of the incarnation.
func (d *simDevice) haltBoot(b *simBoot) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = b.srv.Shutdown(ctx)
	b.cancel()
	b.wg.Wait()
}

// stop takes the device down for good.
func (d *simDevice) stop() {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	if d.cur != nil {
		d.haltBoot(d.cur)
		d.cur = nil
	}
}

// reboot drops every observer, restarts the listeners on the same ports and
// the Observe sequence numbers; the LED goes back to off as on power-up.
// Sensor state (the physical world) carries on.
func (d *simDevice) reboot() error {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	if d.asleep {
		// Asleep, nothing listens: the reboot only resets the state; the
		// next wake opens the socket.
		d.stateMu.Lock()
		d.led = false
		d.stateMu.Unlock()
		d.log.Info("sim device rebooted", "observers_dropped", 0, "boot", d.boots)
		return nil
	}
	if d.cur == nil {
		return errSimStopped
	}
	dropped := d.cur.obs.Observers(simPathTemp) + d.cur.obs.Observers(simPathHumidity) + d.cur.obs.Observers(simPathLED)
	d.haltBoot(d.cur)
	d.cur = nil
	d.stateMu.Lock()
	d.led = false
	d.stateMu.Unlock()
	if err := d.bootLocked(); err != nil {
		d.log.Error("sim device failed to come back after reboot", "err", err)
		return err
	}
	d.log.Info("sim device rebooted", "observers_dropped", dropped, "boot", d.boots)
	return nil
}

// notifySensors sends the current readings to the sensors' observers.
func (d *simDevice) notifySensors() {
	d.netMu.Lock()
	b := d.cur
	d.netMu.Unlock()
	if b == nil {
		return
	}
	b.ticks.Add(1)
	n := b.obs.Notify(simPathTemp)
	n += b.obs.Notify(simPathHumidity)
	if n > 0 {
		d.log.Debug("sim notifications sent", "observers", n)
	}
}

// mux builds the device's resources around one incarnation's notifier.
func (d *simDevice) mux(obs *coapside.ObserveServer) *coapside.ServeMux {
	m := coapside.NewServeMux()
	ct := []uint16{uint16(d.format.mediaType())}
	text := []uint16{uint16(message.TextPlain)}
	sensor := func(name, unit string, v *float64) coapside.Handler {
		return coapside.HandlerFunc(func(w coapside.ResponseWriter, _ *coapside.Request) {
			d.stateMu.Lock()
			p := d.format.encode(d.name, name, unit, *v)
			d.stateMu.Unlock()
			d.writeRepresentation(w, d.format.mediaType(), p)
		})
	}
	// RFC 6690 §3.1, §3.2; RFC 7641 §6: rt, if and obs in discovery.
	m.HandleResource("GET "+simPathTemp, obs.Observable(sensor("temp", "Cel", &d.tempV)),
		linkformat.Resource{ResourceTypes: []string{"temperature"}, Interfaces: []string{"sensor"}, ContentFormats: ct, Observable: true, Title: "Temperature"})
	m.HandleResource("GET "+simPathHumidity, obs.Observable(sensor("humidity", "%RH", &d.humV)),
		linkformat.Resource{ResourceTypes: []string{"humidity"}, Interfaces: []string{"sensor"}, ContentFormats: ct, Observable: true, Title: "Relative humidity"})
	m.HandleResource("GET "+simPathBattery, sensor("battery", "%EL", &d.batV),
		linkformat.Resource{ResourceTypes: []string{"battery"}, Interfaces: []string{"sensor"}, ContentFormats: ct, Title: "Battery level"})
	m.HandleResource("GET "+simPathLED, obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, _ *coapside.Request) {
		d.stateMu.Lock()
		s := ledText(d.led)
		d.stateMu.Unlock()
		d.writeRepresentation(w, message.TextPlain, []byte(s))
	})), linkformat.Resource{ResourceTypes: []string{"led"}, Interfaces: []string{"actuator"}, ContentFormats: text, Observable: true, Title: "LED (PUT on/off)"})
	m.HandleFunc("PUT "+simPathLED, func(w coapside.ResponseWriter, r *coapside.Request) {
		on, err := parseLED(r.Payload)
		if err != nil {
			// RFC 7252 §5.9.2.1: 4.00 with a diagnostic payload (§5.5.2).
			w.SetCode(message.BadRequest)
			_, _ = w.Write([]byte(err.Error()))
			return
		}
		d.stateMu.Lock()
		changed := d.led != on
		d.led = on
		d.stateMu.Unlock()
		w.SetCode(message.Changed)
		// One line per command carried out (a retransmitted request is
		// answered from the deduplication cache and not seen here).
		d.log.Info("sim command", "path", simPathLED, "state", ledText(on), "changed", changed, "by", r.Peer.String())
		if changed {
			obs.Notify(simPathLED)
		}
	})
	return m
}

func (d *simDevice) writeRepresentation(w coapside.ResponseWriter, mt message.MediaType, p []byte) {
	w.SetContentFormat(mt)
	*w.Options() = w.Options().SetUint(message.MaxAge, d.maxAge())
	_, _ = w.Write(p)
}
