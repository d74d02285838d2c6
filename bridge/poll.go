package bridge

import (
	"bytes"
	"context"
	"time"

	"github.com/coap-mqtt/bridge/rules"
)

// poll GETs a resource at the shortest interval of the group's poll rules,
// with ±10% jitter; one poll is in flight at a time. A rule with on_change
// publishes only values that differ from the last one it published.
func (wt *watcher) poll(ctx context.Context, run *watchRun) {
	last := map[string][]byte{} // per rule
	path := wt.group(run).path
	first := true
	flog := failureLog{log: wt.log}
	for {
		g := wt.group(run)
		interval := g.interval()
		wait := interval + jitter(interval/10)
		if first {
			wait, first = jitter(interval/10), false // spread the first polls
		}
		if !sleep(ctx, wait) {
			return
		}
		g = wt.group(run)
		if wt.sleeping(g.device) {
			continue // its radio is off: asked at the next round it is awake
		}
		sent := time.Now()
		resp, err := wt.get(ctx, g, path)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wt.countError(g, reasonOf(err), 0, err)
			wt.presence.unreachable(g.device.Name, err, sent)
			flog.fail("poll failed", "device", g.device.Name, "path", path, "err", err)
			continue
		}
		wt.seen(g.device.Name)
		if resp.Code.Class() == 2 {
			flog.ok("poll recovered", "device", g.device.Name, "path", path)
		}
		if resp.Code.Class() != 2 {
			wt.countError(g, reasonCoAP, resp.Code, nil)
			flog.fail("poll answered with an error", "device", g.device.Name, "path", path, "code", resp.Code.String())
			continue
		}
		n := responseNotification(resp)
		for _, p := range g.polls {
			if prev, ok := last[p.Name]; p.OnChange && ok && bytes.Equal(prev, resp.Payload) {
				continue
			}
			last[p.Name] = append(last[p.Name][:0], resp.Payload...)
			wt.publish(ctx, g, path, n, []ruleOutput{{p.Name, &p.Output}})
		}
	}
}

// sleeping reports whether dev is a learned device asleep now: a poll
// would only wait for a radio that is off.
func (wt *watcher) sleeping(dev *rules.Device) bool {
	return dev.Host == "" && wt.asleep != nil && wt.asleep(dev.Name)
}
