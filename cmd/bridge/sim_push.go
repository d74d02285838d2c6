package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// A pushing device (--push) POSTs its readings to a URL instead of waiting
// to be observed, from the one UDP socket it serves its resources on: a NAT
// in front of it opens a binding for the push, and the bridge's answer and
// later commands come back through that binding to the same socket.
//
// A sleepy device (--sleep) models a battery node's duty cycle: every
// period it wakes (opens its socket again, on the same port), pushes,
// listens for the awake window and then switches its radio off (closes the
// socket), so nothing reaches it until the next wake.

// simPushPlaceholders are the parts of a --push URL filled per request.
const (
	simPushDevice = "{device}"
	simPushMetric = "{metric}"
)

// simReading is one quantity a device pushes, in the order it pushes them.
type simReading struct {
	metric, unit string
	value        func(d *simDevice) float64
}

var simReadings = []simReading{
	{"temp", "Cel", func(d *simDevice) float64 { return d.tempV }},
	{"humidity", "%RH", func(d *simDevice) float64 { return d.humV }},
	{"battery", "%EL", func(d *simDevice) float64 { return d.batV }},
}

// validatePushURL checks a --push URL template: coap:// or coaps:// with
// {device} and {metric}, a valid CoAP URL once they are filled in.
func validatePushURL(tmpl string) error {
	if l := strings.ToLower(tmpl); !strings.HasPrefix(l, "coap://") && !strings.HasPrefix(l, "coaps://") {
		return fmt.Errorf("%w: --push: want a coap:// or coaps:// URL, got %q", errSimOptions, tmpl)
	}
	for _, p := range []string{simPushDevice, simPushMetric} {
		if !strings.Contains(tmpl, p) {
			return fmt.Errorf("%w: --push: the URL must contain %s, got %q", errSimOptions, p, tmpl)
		}
	}
	if _, err := coapside.NewRequest(message.POST, pushURL(tmpl, "sim-0", "temp"), nil); err != nil {
		return fmt.Errorf("%w: --push: %w", errSimOptions, err)
	}
	return nil
}

func pushURL(tmpl, device, metric string) string {
	return strings.NewReplacer(simPushDevice, device, simPushMetric, metric).Replace(tmpl)
}

// pushReadings POSTs every reading (confirmable, in the device's format)
// from the device's own socket, bounded by ctx, and returns how many were
// acknowledged with a 2.xx.
func (d *simDevice) pushReadings(ctx context.Context, tmpl string) int {
	ep, err := d.endpoint(ctx)
	if err != nil {
		d.log.Warn("sim push failed", "err", err)
		return 0
	}
	c, err := coapside.NewClient(coapside.ClientOptions{Endpoint: ep})
	if err != nil {
		d.log.Warn("sim push failed", "err", err)
		return 0
	}
	defer c.Close() // a client on a shared endpoint leaves it open
	ok := 0
	for _, r := range simReadings {
		d.stateMu.Lock()
		p := d.format.encode(d.name, r.metric, r.unit, r.value(d))
		d.stateMu.Unlock()
		url := pushURL(tmpl, d.name, r.metric)
		resp, err := c.Post(ctx, url, d.format.mediaType(), p)
		switch {
		case err != nil:
			d.log.Warn("sim push failed", "url", url, "err", err)
		case resp.Code.Class() != 2:
			d.log.Warn("sim push refused", "url", url, "code", resp.Code.String(), "diag", truncate(string(resp.Payload), 64))
		default:
			ok++
			d.log.Debug("sim push sent", "url", url, "code", resp.Code.String())
		}
	}
	return ok
}

// endpoint returns the message layer of the running incarnation's plain
// socket. Serve registers it as soon as its goroutine runs, so this waits
// briefly for a boot that has just happened.
func (d *simDevice) endpoint(ctx context.Context) (*coapside.Endpoint, error) {
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		d.netMu.Lock()
		b := d.cur
		d.netMu.Unlock()
		if b == nil {
			return nil, errSimStopped
		}
		for _, ep := range b.srv.Endpoints() {
			if ep.LocalAddr().String() == d.Addr().String() {
				return ep, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("sim %s: socket not serving: %w", d.name, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// sleepRadio switches the radio off: the socket closes with the
// incarnation's observers, so nothing reaches the device until wakeRadio.
// The LED and the sensors keep their state.
func (d *simDevice) sleepRadio() {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	if d.cur == nil {
		return
	}
	d.haltBoot(d.cur)
	d.cur = nil
	d.asleep = true
}

// wakeRadio opens the socket again on the same port; it does nothing for a
// device that has been stopped.
func (d *simDevice) wakeRadio() error {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	if !d.asleep {
		return nil
	}
	if err := d.bootLocked(); err != nil {
		return err
	}
	d.asleep = false
	return nil
}

// runPush pushes d's readings every interval, first at once, advancing the
// sensors before each push; the device listens all the time.
func (f *simFleet) runPush(ctx context.Context, d *simDevice) {
	t := time.NewTicker(f.opts.Interval)
	defer t.Stop()
	for {
		f.pushOnce(ctx, d, f.opts.Interval)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.tick()
			d.notifySensors()
		}
	}
}

func (f *simFleet) pushOnce(ctx context.Context, d *simDevice, bound time.Duration) {
	pctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	d.pushReadings(pctx, f.opts.Push)
}

// runSleepy runs d's duty cycle: wake every Sleep period, advance the
// sensors, push, listen for Awake, sleep until the next wake.
func (f *simFleet) runSleepy(ctx context.Context, d *simDevice) {
	wake := time.Now()
	for {
		d.log.Info("sim device awake", "window", f.opts.Awake)
		// A push gets at most the period, less the awake window, so a
		// bridge that does not answer does not stretch the cycle.
		f.pushOnce(ctx, d, f.opts.Sleep-f.opts.Awake)
		if !sleepCtx(ctx, f.opts.Awake) {
			return
		}
		d.sleepRadio()
		wake = wake.Add(f.opts.Sleep)
		if now := time.Now(); wake.Before(now) {
			wake = now // a slow push or a busy machine: wake at once
		}
		d.log.Info("sim device asleep", "until", wake.Format(time.RFC3339Nano))
		if !sleepCtx(ctx, time.Until(wake)) {
			return
		}
		if err := d.wakeRadio(); err != nil {
			d.log.Error("sim device failed to wake", "err", err)
			continue
		}
		d.tick()
		d.notifySensors()
	}
}

// sleepCtx waits for d or the end of ctx and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
