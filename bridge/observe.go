package bridge

import (
	"context"

	"github.com/coap-mqtt/bridge/rules"
)

// observe keeps a resource fed for an observe rule. Until the client side of
// RFC 7641 is wired in, it polls at ObserveFallbackInterval, as it does for
// a resource that is not observable.
func (wt *watcher) observe(ctx context.Context, run *watchRun) {
	w := run.w
	wt.b.log.Warn("observing by polling", "rule", w.Observe.Name, "device", w.Device.Name, "path", w.Path,
		"interval", wt.b.opts.ObserveFallbackInterval)
	poll := *run.w.Observe
	fallback := &watchRun{
		w:      rules.Watch{Device: w.Device, Path: w.Path, Poll: &rules.Poll{Name: poll.Name, Interval: wt.b.opts.ObserveFallbackInterval, OnChange: true, Output: poll.Output}},
		cancel: run.cancel,
		done:   run.done,
	}
	wt.poll(ctx, fallback)
}
