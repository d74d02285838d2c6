package bridge

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// observe keeps an RFC 7641 observation on a device resource for the group's
// observe rules and publishes every notification. When the observation ends
// (the device rebooted, answered RST or an error, or went silent past
// Max-Age and did not answer the re-registration) it observes again with
// exponential backoff and jitter. A resource that is not observable is
// polled instead, and observing is tried again after a while. A learned
// device is registered with only while it is awake, and again when it
// wakes (see observeHealth.wake). finish runs
// once it is over (ctx ended). While an observation is held no goroutine
// waits for it: observe returns, and its end or ctx's resumes the loop
// (observeLoop.resume). It runs from wt.establishing: release gives its
// place there to the next loop once the first registration is answered or
// failed, before any backoff.
func (wt *watcher) observe(ctx context.Context, run *watchRun, path string, finish, release func()) {
	l := &observeLoop{wt: wt, ctx: ctx, run: run, path: path, finish: finish,
		bo: backoff{min: wt.opts.ReobserveMin, max: wt.opts.ReobserveMax}, flog: failureLog{log: wt.log}}
	l.loop(release)
}

// DefaultMaxEstablishing is how many observations the bridge registers at
// once by default: the size of its CoAP client's peer table
// (coapside.DefaultMaxPeers), so that the registrations in flight fit in
// it. A bridge starting with 100,000 observations otherwise sent all their
// registrations at once, each waiting in a goroutine of its own (about
// 5 KB of stack: 500 MB at the peak, resident long after), and their
// answers overflowed its socket's receive buffer.
const DefaultMaxEstablishing = coapside.DefaultMaxPeers

// establishQueue runs functions with at most max running at once; the
// others wait in order, as closures, not goroutines. A function gives its
// place up by calling release (or returning), and may go on running.
type establishQueue struct {
	max int

	mu      sync.Mutex
	running int
	waiting []func(release func())
}

// Go runs f now, in a goroutine of its own, or when a place is free.
func (q *establishQueue) Go(f func(release func())) {
	q.mu.Lock()
	if q.running >= q.max {
		q.waiting = append(q.waiting, f)
		q.mu.Unlock()
		return
	}
	q.running++
	q.mu.Unlock()
	go q.run(f)
}

func (q *establishQueue) run(f func(release func())) {
	var once sync.Once
	release := func() { once.Do(q.next) }
	defer release()
	f(release)
}

// next gives a freed place to the first waiting function.
func (q *establishQueue) next() {
	q.mu.Lock()
	if len(q.waiting) == 0 {
		q.running--
		q.mu.Unlock()
		return
	}
	f := q.waiting[0]
	q.waiting[0] = nil
	q.waiting = q.waiting[1:]
	if len(q.waiting) == 0 {
		q.waiting = nil // let the backing array go
	}
	q.mu.Unlock()
	go q.run(f)
}

// observeLoop is the state of one resource's observe loop, kept across the
// time an observation is held.
type observeLoop struct {
	wt          *watcher
	ctx         context.Context
	run         *watchRun
	path        string
	finish      func()
	bo          backoff
	flog        failureLog
	established int

	// The observation held, its group and health, and the stop of its
	// context.AfterFunc (under mu: a context already ended runs resume
	// before AfterFunc returns it).
	obs     *coapside.Observation
	g       *watchGroup
	health  *observeHealth
	mu      sync.Mutex
	stopCtx func() bool
}

// loop observes until an observation is established, which it leaves
// held, or ctx ends, when it finishes. release gives up its place in
// wt.establishing.
func (l *observeLoop) loop(release func()) {
	if !l.establish(release) {
		l.finish()
	}
}

// establish tries, with backoff, until an observation is established and
// held (true) or ctx ends (false). It calls release once its first
// attempt is over, before any backoff: retries do not wait for a place.
func (l *observeLoop) establish(release func()) bool {
	wt, ctx, run, path := l.wt, l.ctx, l.run, l.path
	defer release()
	for ctx.Err() == nil {
		g := wt.group(run)
		health := wt.observeHealth(g.device.Name)
		if woken := health.nextWake(); wt.sleeping(g.device) {
			// A learned device whose radio is off: a registration now
			// would only time out. It is made at its next uplink.
			release()
			select {
			case <-ctx.Done():
				return false
			case <-woken:
			}
			continue
		}
		req, err := deviceRequest(g.device, path)
		if err != nil {
			release()
			wt.countError(g, reasonCoAP, 0, err)
			l.flog.fail("observe: bad resource path", "device", g.device.Name, "path", path, "err", err)
			if !l.pause(health) {
				return false
			}
			continue
		}
		sent := time.Now()
		client, err := wt.devices.prepare(ctx, g.device, g.device.Secure, req)
		if err != nil {
			release()
			if ctx.Err() != nil {
				return false
			}
			wt.countError(g, reasonOf(err), 0, err)
			wt.presence.unreachable(g.device.Name, err, sent)
			l.flog.fail("observe: cannot reach device", "device", g.device.Name, "path", path, "err", err)
			if !l.pause(health) {
				return false
			}
			continue
		}
		obs, err := client.ObserveRequest(ctx, req, func(n coapside.Notification) {
			cur := wt.group(run)
			wt.seen(cur.device.Name)
			if n.Code.Class() != 2 {
				return // the observation ends; the loop counts it and re-observes
			}
			wt.feed.notify(cur.device.Name, path, &n)
			wt.publish(ctx, cur, path, &n, observeOutputs(cur.observes))
		}, wt.observationOptions(g.device, path))
		release()
		switch {
		case ctx.Err() != nil:
			return false
		case errors.Is(err, coapside.ErrNotObservable):
			wt.log.Info("resource not observable: polling", "device", g.device.Name, "path", path, "interval", wt.opts.ObserveFallbackInterval)
			wt.fallbackPoll(ctx, run, path)
			continue
		case err != nil:
			wt.countError(g, reasonOf(err), 0, err)
			wt.presence.unreachable(g.device.Name, err, sent)
			l.flog.fail("observe failed", "device", g.device.Name, "path", path, "err", err)
			if !l.pause(health) {
				return false
			}
			continue
		}
		l.bo.reset()
		wt.observationUp(1)
		wt.feed.up(g.device.Name, path, 1)
		health.up(obs)
		if l.established > 0 {
			health.reobserved.Add(1)
		}
		l.established++
		l.flog.ok("observing again", "device", g.device.Name, "path", path)
		wt.log.Debug("observing", "device", g.device.Name, "path", path)
		l.obs, l.g, l.health = obs, g, health
		var resumed atomic.Bool
		resume := func() {
			if resumed.CompareAndSwap(false, true) {
				l.resume()
			}
		}
		l.mu.Lock()
		l.stopCtx = context.AfterFunc(ctx, resume)
		l.mu.Unlock()
		obs.AfterDone(resume)
		return true
	}
	return false
}

// pause waits out the backoff before the next attempt; the device's wake
// (observeHealth.wake) cuts it short. It reports whether l.ctx is still
// live.
func (l *observeLoop) pause(health *observeHealth) bool {
	t := time.NewTimer(l.bo.next())
	defer t.Stop()
	select {
	case <-l.ctx.Done():
		return false
	case <-t.C:
	case <-health.nextWake():
	}
	return true
}

// resume runs, in a goroutine of its own, when the held observation or
// ctx ends: it counts the end and observes again, or finishes.
func (l *observeLoop) resume() {
	l.mu.Lock()
	stop := l.stopCtx
	l.stopCtx = nil
	l.mu.Unlock()
	stop()
	wt, ctx, obs, g, health := l.wt, l.ctx, l.obs, l.g, l.health
	l.obs, l.g, l.health = nil, nil, nil
	if ctx.Err() != nil {
		// Stopped (a reload, the device moved, shutdown), also when the
		// observation ended too: its deregistration failing at once is
		// no loss. The observation deregisters itself (GET Observe=1)
		// when its context ends, waiting for the answer no longer than
		// the shutdown's share for deregistration (wt.drain).
		select {
		case <-obs.Done():
		case <-wt.drain.Done():
		}
		wt.observationUp(-1)
		wt.feed.up(g.device.Name, l.path, -1)
		health.down(obs)
		l.finish()
		return
	}
	// The observation ended on its own (resume runs once it or ctx did).
	wt.observationUp(-1)
	wt.feed.up(g.device.Name, l.path, -1)
	health.down(obs)
	wt.countError(wt.group(l.run), reasonObservationLost, 0, obs.Err())
	l.flog.fail("observation ended: observing again", "device", g.device.Name, "path", l.path, "err", obs.Err())
	if !l.pause(health) {
		l.finish()
		return
	}
	l.wt.establishing.Go(l.loop)
}

// observationOptions tune the observation of one device resource: stale
// notifications are counted and logged, a restarted sequence (the device
// rebooted) is logged, the deregistration at the end waits no longer
// than the shutdown allows, and a learned device is not re-registered
// with when Max-Age runs out while it sleeps (its wake does it, see
// observeHealth.wake).
func (wt *watcher) observationOptions(dev *rules.Device, path string) coapside.ObservationOptions {
	device := dev.Name
	stale := wt.metrics.staleDropped.WithLabelValues(device)
	health := wt.observeHealth(device)
	return coapside.ObservationOptions{
		CancelContext: wt.drain,
		Asleep:        func() bool { return wt.sleeping(dev) },
		OnStale: func(seq, latest uint32) {
			stale.Inc()
			health.stale.Add(1)
			wt.log.Debug("observe: stale notification dropped", "device", device, "path", path, "seq", seq, "latest", latest)
		},
		OnRestart: func(seq, previous uint32) {
			wt.log.Info("observe sequence restarted", "device", device, "path", path, "seq", seq, "previous", previous)
		},
	}
}

// countError counts one failure, err, against every rule of a group.
// code is the device's answer, when it answered.
func (wt *watcher) countError(g *watchGroup, reason string, code message.Code, err error) {
	d := errorDetail{device: g.device.Name, code: code, err: err}
	for _, o := range g.observes {
		wt.metrics.ruleError(o.Name, reason, d)
	}
	for _, p := range g.polls {
		wt.metrics.ruleError(p.Name, reason, d)
	}
}

// fallbackPoll polls a resource that cannot be observed for
// FallbackRounds intervals, publishing changed values to the observe rules.
func (wt *watcher) fallbackPoll(ctx context.Context, run *watchRun, path string) {
	var last []byte
	have := false
	for i := 0; i < wt.opts.FallbackRounds; i++ {
		if !sleep(ctx, wt.opts.ObserveFallbackInterval+jitter(wt.opts.ObserveFallbackInterval/10)) {
			return
		}
		g := wt.group(run)
		if wt.sleeping(g.device) {
			continue // its radio is off: asked at the next round it is awake
		}
		sent := time.Now()
		resp, err := wt.get(ctx, g, path)
		if err != nil {
			wt.countError(g, reasonOf(err), 0, err)
			wt.presence.unreachable(g.device.Name, err, sent)
			continue
		}
		wt.seen(g.device.Name)
		if resp.Code.Class() != 2 {
			wt.countError(g, reasonCoAP, resp.Code, nil)
			continue
		}
		if have && bytes.Equal(last, resp.Payload) {
			continue
		}
		last, have = append(last[:0], resp.Payload...), true
		wt.publish(ctx, g, path, responseNotification(resp), observeOutputs(g.observes))
	}
}

// discover resolves an observe rule's discover query against the device's
// /.well-known/core and keeps one observation per listed observable
// resource, refreshing the list every DiscoveryRefresh.
func (wt *watcher) discover(ctx context.Context, run *watchRun) {
	type child struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	children := map[string]*child{}
	defer func() {
		for _, c := range children {
			c.cancel()
		}
		for _, c := range children {
			<-c.done
		}
	}()
	bo := backoff{min: wt.opts.ReobserveMin, max: wt.opts.ReobserveMax}
	flog := failureLog{log: wt.log}
	for ctx.Err() == nil {
		g := wt.group(run)
		rule := g.observes[0]
		var links []string
		sent := time.Now()
		req, err := deviceRequest(g.device, "")
		var client *coapside.Client
		if err == nil {
			client, err = wt.devices.prepare(ctx, g.device, g.device.Secure, req)
		}
		catalog := !rule.CatalogTopic.IsZero()
		var all []linkformat.Link
		if err == nil {
			dctx, cancel := context.WithTimeout(ctx, wt.opts.RequestTimeout)
			var ls []linkTarget
			ls, all, err = discoverPaths(dctx, client, req, rule.Discover, catalog)
			cancel()
			for _, l := range ls {
				links = append(links, string(l))
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wt.countError(g, reasonOf(err), 0, err)
			wt.presence.unreachable(g.device.Name, err, sent)
			flog.fail("discovery failed", "rule", rule.Name, "device", g.device.Name, "query", rule.Discover, "err", err)
			if !sleep(ctx, bo.next()) {
				return
			}
			continue
		}
		bo.reset()
		flog.ok("discovery recovered", "rule", rule.Name, "device", g.device.Name)
		wt.seen(g.device.Name)
		if catalog {
			wt.catalogs.publish(ctx, rule.CatalogTopic, g.device.Name, all)
		}
		want := map[string]bool{}
		for _, p := range links {
			want[p] = true
			if _, ok := children[p]; ok {
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			c := &child{cancel: cancel, done: make(chan struct{})}
			children[p] = c
			wt.establishing.Go(func(release func()) { wt.observe(cctx, run, p, func() { close(c.done) }, release) })
		}
		var gone []*child
		for p, c := range children {
			if !want[p] {
				c.cancel() // all at once: each may wait for its deregistration
				gone = append(gone, c)
				delete(children, p)
			}
		}
		for _, c := range gone {
			<-c.done
		}
		wt.log.Info("discovered", "rule", rule.Name, "device", g.device.Name, "query", rule.Discover, "resources", len(children))
		if !sleep(ctx, wt.opts.DiscoveryRefresh) {
			return
		}
	}
}

// linkTarget is a resource path found by discovery.
type linkTarget string

// discoverPaths lists the paths of the observable resources on a device
// matching query (RFC 6690 §4.1), asking with req (the device's
// /.well-known/core once Discover has added the path). With whole, the
// device is asked for every link, which is returned as all, and query is
// applied here (RFC 6690 §4.1 filtering is optional for servers anyway).
func discoverPaths(ctx context.Context, c *coapside.Client, req *coapside.Request, query string, whole bool) (paths []linkTarget, all []linkformat.Link, err error) {
	links, err := discoverLinks(ctx, c, req, query, whole)
	if err != nil {
		return nil, nil, err
	}
	if whole {
		all = links
		filters, err := linkformat.ParseFilters([]string{query, "obs"})
		if err != nil {
			return nil, nil, err
		}
		links = linkformat.Select(links, filters)
	}
	for _, l := range links {
		u, err := url.Parse(l.Target)
		if err != nil || u.Path == "" || u.Host != "" {
			continue // a link to another host is not this device's resource
		}
		paths = append(paths, linkTarget(u.Path))
	}
	return paths, all, nil
}

// discoverLinks reads the device's /.well-known/core: every link with
// whole, else those matching query that are observable.
func discoverLinks(ctx context.Context, c *coapside.Client, req *coapside.Request, query string, whole bool) ([]linkformat.Link, error) {
	if whole {
		return c.DiscoverRequest(ctx, req)
	}
	return c.DiscoverRequest(ctx, req, query, "obs")
}

// get performs one GET on a device resource.
func (wt *watcher) get(ctx context.Context, g *watchGroup, path string) (*coapside.Response, error) {
	req, err := deviceRequest(g.device, path)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, wt.opts.RequestTimeout)
	defer cancel()
	return wt.devices.doFor(ctx, g.device, g.device.Secure, req)
}

// responseNotification views a plain response as a notification.
func responseNotification(r *coapside.Response) *coapside.Notification {
	return &coapside.Notification{Code: r.Code, Options: r.Options, Payload: r.Payload, Peer: r.Peer, Received: time.Now()}
}
