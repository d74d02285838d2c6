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

// apply makes the running watches equal to ws: new keys start, missing keys
// stop, and keys whose rule content changed restart.
func (wt *watcher) apply(ws []rules.Watch) {
	want := make(map[string]rules.Watch, len(ws))
	for _, w := range ws {
		want[w.Key()] = w
	}
	wt.mu.Lock()
	defer wt.mu.Unlock()
	for k, run := range wt.running {
		if nw, ok := want[k]; ok && sameWatch(run.w, nw) {
			run.w = nw
			continue
		}
		run.cancel()
		<-run.done
		delete(wt.running, k)
	}
	for k, w := range want {
		if _, ok := wt.running[k]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(wt.ctx)
		run := &watchRun{w: w, cancel: cancel, done: make(chan struct{})}
		wt.running[k] = run
		wt.wg.Add(1)
		go func() {
			defer wt.wg.Done()
			defer close(run.done)
			wt.run(ctx, run)
		}()
	}
}

// sameWatch reports whether a running watch can stay as it is.
func sameWatch(a, b rules.Watch) bool {
	if a.Device.URL != b.Device.URL || a.Device.PSKIdentity != b.Device.PSKIdentity || !a.Device.PSK.Equal(b.Device.PSK) {
		return false
	}
	if (a.Poll == nil) != (b.Poll == nil) {
		return false
	}
	if a.Poll != nil && (a.Poll.Interval != b.Poll.Interval || a.Poll.OnChange != b.Poll.OnChange) {
		return false
	}
	return true
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
