package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coap-mqtt/bridge/coapside/dtls"
)

var (
	errSimOptions = errors.New("sim: invalid options")
	errSimStopped = errors.New("sim: device not running")
)

// simOptions configures a simulated fleet.
type simOptions struct {
	// Devices is the number of devices, named sim-0 .. sim-(N-1).
	Devices int
	// ListenHost is the IP address every device listens on.
	ListenHost string
	// BasePort is the plain CoAP port of sim-0; device i listens on
	// BasePort+i. 0 gives every device a free ephemeral port (tests).
	BasePort int
	// DTLSBasePort is the coaps port of sim-0 when PSK is set; device i
	// listens on DTLSBasePort+i. 0 means BasePort+Devices (the ports right
	// after the plain ones), or ephemeral ports when BasePort is 0.
	DTLSBasePort int
	// PSK, when set, adds a coaps listener per device accepting the identity
	// PSKIdentityPrefix+i with this key (RFC 7252 §9.1.3.1).
	PSK               dtls.Secret
	PSKIdentityPrefix string
	// Interval is the time between sensor updates and notifications.
	Interval time.Duration
	// Format encodes the sensor readings.
	Format simFormat
	// Seed makes the data reproducible.
	Seed uint64
	// RebootEvery, when positive, reboots every device at this period.
	RebootEvery time.Duration
	// NamePrefix names device i NamePrefix+i ("sim-" when empty).
	NamePrefix string
	// Push, when set, is a coap:// or coaps:// URL template ({device},
	// {metric}) the devices POST their readings to, from the socket they
	// serve on: every Interval, or at every wake with Sleep. Over coaps the
	// device is a DTLS client with its PSK identity and serves on the
	// sessions it opens; it has no coaps listener.
	Push string
	// Sleep, when positive (Push only), is the duty cycle: the device wakes
	// every Sleep, pushes, listens for Awake and closes its socket until the
	// next wake.
	Sleep time.Duration
	// Awake is the listening window after each wake's push; default 5 s.
	Awake time.Duration
	// Logger receives what happens; nil discards.
	Logger *slog.Logger
}

func (o *simOptions) validate() error {
	if o.Devices < 1 || o.Devices > 10000 {
		return fmt.Errorf("%w: --devices must be 1..10000, got %d", errSimOptions, o.Devices)
	}
	if _, err := netip.ParseAddr(o.ListenHost); err != nil {
		return fmt.Errorf("%w: --listen-host must be an IP address: %w", errSimOptions, err)
	}
	if o.Interval <= 0 {
		return fmt.Errorf("%w: --interval must be positive", errSimOptions)
	}
	if o.RebootEvery < 0 {
		return fmt.Errorf("%w: --reboot-every must not be negative", errSimOptions)
	}
	if err := o.validatePush(); err != nil {
		return err
	}
	if o.Format == "" {
		o.Format = simText
	}
	if o.NamePrefix == "" {
		o.NamePrefix = "sim-"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	check := func(flag string, base int) error {
		if base < 0 || base+o.Devices-1 > 65535 {
			return fmt.Errorf("%w: %s %d with %d devices goes past port 65535", errSimOptions, flag, base, o.Devices)
		}
		return nil
	}
	if err := check("--base-port", o.BasePort); err != nil {
		return err
	}
	if !o.PSK.IsZero() && o.Push == "" {
		if o.DTLSBasePort == 0 && o.BasePort != 0 {
			o.DTLSBasePort = o.BasePort + o.Devices
		}
		if err := check("--dtls-base-port", o.DTLSBasePort); err != nil {
			return err
		}
	}
	return nil
}

// pushesDTLS reports whether the devices push over coaps.
func (o *simOptions) pushesDTLS() bool {
	return strings.HasPrefix(strings.ToLower(o.Push), "coaps://")
}

// validatePush checks the push and duty-cycle options together.
func (o *simOptions) validatePush() error {
	if o.Push == "" {
		if o.Sleep != 0 {
			return fmt.Errorf("%w: --sleep needs --push: a sleeping device is only reached after it pushes", errSimOptions)
		}
		return nil
	}
	if err := validatePushURL(o.Push); err != nil {
		return err
	}
	switch {
	case o.pushesDTLS() && o.PSK.IsZero():
		return fmt.Errorf("%w: --push coaps:// needs --psk-key", errSimOptions)
	case !o.pushesDTLS() && !o.PSK.IsZero():
		return fmt.Errorf("%w: --psk-key with a coap:// --push: push to a coaps:// URL", errSimOptions)
	case o.DTLSBasePort != 0:
		return fmt.Errorf("%w: --dtls-base-port with --push: a pushing device has one socket, on --base-port", errSimOptions)
	}
	if o.Sleep < 0 {
		return fmt.Errorf("%w: --sleep must not be negative", errSimOptions)
	}
	if o.Awake == 0 {
		o.Awake = 5 * time.Second
	}
	if o.Awake < 0 {
		return fmt.Errorf("%w: --awake must be positive", errSimOptions)
	}
	if o.Sleep > 0 && o.Awake >= o.Sleep {
		return fmt.Errorf("%w: --awake %v must be shorter than --sleep %v", errSimOptions, o.Awake, o.Sleep)
	}
	return nil
}

// simFleet runs a set of simulated devices. Start it, then Close it.
type simFleet struct {
	opts    simOptions
	devices []*simDevice

	mu      sync.Mutex
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
	closed  bool
}

// newSimFleet validates o and prepares the devices without binding sockets.
func newSimFleet(o simOptions) (*simFleet, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	f := &simFleet{opts: o}
	host := net.ParseIP(o.ListenHost)
	for i := range o.Devices {
		port := 0
		if o.BasePort != 0 {
			port = o.BasePort + i
		}
		var daddr *net.UDPAddr
		if !o.PSK.IsZero() && o.Push == "" {
			dport := 0
			if o.DTLSBasePort != 0 {
				dport = o.DTLSBasePort + i
			}
			daddr = &net.UDPAddr{IP: host, Port: dport}
		}
		f.devices = append(f.devices, newSimDevice(o.NamePrefix+strconv.Itoa(i), fmt.Sprintf("%s%d", o.PSKIdentityPrefix, i),
			&net.UDPAddr{IP: host, Port: port}, daddr, &f.opts, o.Seed, i))
	}
	return f, nil
}

// Devices returns the fleet's devices in order.
func (f *simFleet) Devices() []*simDevice { return f.devices }

// Start binds every device's listeners and starts the sensor clocks (and
// the reboot schedule), which run until ctx ends or Close; the listeners
// serve until Close. If a device cannot listen, the ones already started
// are stopped and the error is returned.
func (f *simFleet) Start(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started || f.closed {
		return fmt.Errorf("%w: fleet already started", errSimOptions)
	}
	for i, d := range f.devices {
		if err := d.start(); err != nil {
			for _, s := range f.devices[:i] {
				s.stop()
			}
			return err
		}
		attrs := []any{"addr", d.Addr().String()}
		if da := d.DTLSAddr(); da != nil {
			attrs = append(attrs, "coaps", da.String(), "psk_identity", d.identity)
		}
		d.log.Info("sim device up", attrs...)
	}
	ctx, f.cancel = context.WithCancel(ctx)
	f.started = true
	for _, d := range f.devices {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			switch {
			case f.opts.Sleep > 0:
				f.runSleepy(ctx, d)
			case f.opts.Push != "":
				f.runPush(ctx, d)
			default:
				f.runClock(ctx, d)
			}
		}()
	}
	if f.opts.RebootEvery > 0 {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			t := time.NewTicker(f.opts.RebootEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					f.RebootAll()
				}
			}
		}()
	}
	attrs := []any{"devices", len(f.devices), "interval", f.opts.Interval, "format", string(f.opts.Format), "seed", f.opts.Seed}
	if f.opts.Push != "" {
		attrs = append(attrs, "push", f.opts.Push)
	}
	if f.opts.Sleep > 0 {
		attrs = append(attrs, "sleep", f.opts.Sleep, "awake", f.opts.Awake)
	}
	f.opts.Logger.Info("sim fleet running", attrs...)
	return nil
}

// runClock advances d's sensors and notifies observers every interval.
func (f *simFleet) runClock(ctx context.Context, d *simDevice) {
	t := time.NewTicker(f.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.tick()
			d.notifySensors()
		}
	}
}

// Reboot reboots device i (see simDevice.reboot).
func (f *simFleet) Reboot(i int) error {
	if i < 0 || i >= len(f.devices) {
		return fmt.Errorf("%w: no device %d", errSimOptions, i)
	}
	return f.devices[i].reboot()
}

// RebootAll reboots every device, logging failures.
func (f *simFleet) RebootAll() {
	f.opts.Logger.Info("sim rebooting all devices", "devices", len(f.devices))
	for i := range f.devices {
		_ = f.Reboot(i) // reboot logs its own failure
	}
}

// Close stops the clocks and every device. It is idempotent.
func (f *simFleet) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	cancel := f.cancel
	f.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	f.wg.Wait()
	for _, d := range f.devices {
		d.stop()
	}
	f.opts.Logger.Info("sim fleet stopped")
}
