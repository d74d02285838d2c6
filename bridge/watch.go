package bridge

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/url"
	"sync"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// watcher runs one goroutine per watch (a device resource kept fed by an
// observe or poll rule) and starts and stops them as the rule set changes.
type watcher struct {
	b   *Bridge
	ctx context.Context

	mu      sync.Mutex
	running map[string]*watchRun // by rules.Watch.Key()
	wg      sync.WaitGroup
}

type watchRun struct {
	w      rules.Watch
	cancel context.CancelFunc
	done   chan struct{}
}

func newWatcher(ctx context.Context, b *Bridge) *watcher {
	return &watcher{b: b, ctx: ctx, running: map[string]*watchRun{}}
}

// apply starts added watches, restarts changed ones and stops removed ones;
// kept watches go on with the new rule set's copy of their rule.
func (wt *watcher) apply(d rules.ItemDiff[rules.Watch]) {
	var stopped []*watchRun
	defer func() { // wait outside the lock: a stopping run may be in current()
		for _, run := range stopped {
			<-run.done
		}
	}()
	wt.mu.Lock()
	defer wt.mu.Unlock()
	stop := func(key string) {
		if run, ok := wt.running[key]; ok {
			run.cancel()
			stopped = append(stopped, run)
			delete(wt.running, key)
		}
	}
	for _, w := range d.Removed {
		stop(w.Key())
	}
	for _, u := range d.Changed {
		stop(u.Old.Key())
		wt.startLocked(u.New)
	}
	for _, u := range d.Kept {
		if run, ok := wt.running[u.New.Key()]; ok {
			run.w = u.New
		} else {
			wt.startLocked(u.New)
		}
	}
	for _, w := range d.Added {
		wt.startLocked(w)
	}
	wt.b.metrics.observations.Set(float64(wt.countObserveLocked()))
}

func (wt *watcher) startLocked(w rules.Watch) {
	ctx, cancel := context.WithCancel(wt.ctx)
	run := &watchRun{w: w, cancel: cancel, done: make(chan struct{})}
	wt.running[w.Key()] = run
	wt.wg.Add(1)
	go func() {
		defer wt.wg.Done()
		defer close(run.done)
		wt.run(ctx, run)
	}()
}

func (wt *watcher) countObserveLocked() int {
	n := 0
	for _, run := range wt.running {
		if run.w.Observe != nil {
			n++
		}
	}
	return n
}

// stop ends every watch and waits for them.
func (wt *watcher) stop() {
	wt.mu.Lock()
	for k, run := range wt.running {
		run.cancel()
		delete(wt.running, k)
	}
	wt.mu.Unlock()
	wt.wg.Wait()
}

// current returns the watch for key as the rule set has it now (a reload may
// have replaced the rule behind an unchanged watch).
func (wt *watcher) current(run *watchRun) rules.Watch {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return run.w
}

func (wt *watcher) run(ctx context.Context, run *watchRun) {
	w := run.w
	if w.Poll != nil {
		wt.poll(ctx, run)
		return
	}
	wt.observe(ctx, run)
}

// poll GETs the resource every interval with ±10% jitter; one poll is in
// flight at a time. With on_change only changed payloads are published.
func (wt *watcher) poll(ctx context.Context, run *watchRun) {
	b := wt.b
	var last []byte
	havePrev := false
	interval := run.w.Poll.Interval
	timer := time.NewTimer(jitter(interval / 10)) // spread the first polls
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		w := wt.current(run)
		resp, err := wt.get(ctx, w)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.metrics.errors.WithLabelValues(w.Poll.Name, reasonOf(err)).Inc()
			b.log.Warn("poll failed", "rule", w.Poll.Name, "device", w.Device.Name, "path", w.Path, "err", err)
		} else {
			b.deviceSeen(w.Device.Name)
			if resp.Code.Class() != 2 {
				b.metrics.errors.WithLabelValues(w.Poll.Name, reasonCoAP).Inc()
				b.log.Warn("poll answered with an error", "rule", w.Poll.Name, "device", w.Device.Name, "path", w.Path, "code", resp.Code.String())
			} else if !w.Poll.OnChange || !havePrev || !bytes.Equal(last, resp.Payload) {
				last, havePrev = append(last[:0], resp.Payload...), true
				wt.publish(ctx, w.Poll.Name, &w.Poll.Output, w, resp)
			}
		}
		timer.Reset(interval + jitter(interval/10))
	}
}

// publish sends a device response (a poll result or a notification) to MQTT.
func (wt *watcher) publish(ctx context.Context, rule string, out *rules.Output, w rules.Watch, resp *coapside.Response) {
	in := &inbound{
		Payload:       resp.Payload,
		ContentFormat: -1,
		Path:          w.Path,
		Device:        w.Device.Name,
		Received:      time.Now(),
	}
	if cf, ok := resp.Options.ContentFormat(); ok {
		in.ContentFormat = int(cf)
	}
	_ = wt.b.publishOutput(ctx, rule, out, w.Captures(), in) // counted and logged there
}

// get performs one GET on a watched resource.
func (wt *watcher) get(ctx context.Context, w rules.Watch) (*coapside.Response, error) {
	req, err := coapside.NewRequest(message.GET, resourceURL(w), nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, wt.b.opts.RequestTimeout)
	defer cancel()
	return wt.b.devices.Do(ctx, w.Device.Secure, req)
}

// resourceURL is the coap(s):// URL of a watched resource.
func resourceURL(w rules.Watch) string {
	scheme := "coap"
	if w.Device.Secure {
		scheme = "coaps"
	}
	u := url.URL{Scheme: scheme, Host: w.Device.Host, Path: w.Path}
	return u.String()
}

// reasonOf maps a request error to a metric reason.
func reasonOf(err error) string {
	if errors.Is(err, coapside.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return reasonTimeout
	}
	return reasonCoAP
}

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}
