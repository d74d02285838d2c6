package bridge

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
	"github.com/coap-mqtt/bridge/rules"
)

// watchKind tells how a watch keeps its resource fed.
type watchKind uint8

const (
	kindObserve  watchKind = iota + 1 // RFC 7641 observation (polling if not observable)
	kindPoll                          // periodic GET
	kindDiscover                      // /.well-known/core query, then observations
	kindCatalog                       // the whole /.well-known/core for [catalog]
)

// watchGroup is one unit of work: a device resource (or a discovery query)
// with every rule it feeds. All observe rules on one device+path share one
// observation; all poll rules on one device+path share one poll loop.
type watchGroup struct {
	kind     watchKind
	device   *rules.Device
	path     string           // "" for discovery
	observes []*rules.Observe // observe rules fed (kindObserve, kindDiscover)
	polls    []*rules.Poll    // poll rules fed (kindPoll)
}

// key identifies a group across reloads.
func (g *watchGroup) key() string {
	switch g.kind {
	case kindPoll:
		return "poll " + g.device.Name + " " + g.path
	case kindDiscover:
		return "discover " + g.device.Name + " " + g.observes[0].Name
	case kindCatalog:
		return "catalog " + g.device.Name
	}
	return "observe " + g.device.Name + " " + g.path
}

// interval is the shortest interval of the group's poll rules.
func (g *watchGroup) interval() time.Duration {
	var d time.Duration
	for _, p := range g.polls {
		if d == 0 || p.Interval < d {
			d = p.Interval
		}
	}
	return d
}

// sameWork reports whether a running group can keep running with g's rules:
// the device's address and credentials, the poll timing and the discovery
// query are unchanged. Rule outputs (topics, where, transform) are read at
// publish time and need no restart.
func (g *watchGroup) sameWork(o *watchGroup) bool {
	a, b := g.device, o.device
	if a.URL != b.URL || a.PSKIdentity != b.PSKIdentity || !a.PSK.Equal(b.PSK) ||
		a.CertFile != b.CertFile || a.KeyFile != b.KeyFile || a.CAFile != b.CAFile {
		return false
	}
	if g.interval() != o.interval() {
		return false
	}
	if g.kind == kindDiscover && (g.observes[0].Discover != o.observes[0].Discover ||
		g.observes[0].CatalogTopic.String() != o.observes[0].CatalogTopic.String()) {
		return false // read at once, as the rule now asks
	}
	return true
}

// groupWatches groups a rule set's watches by device and path.
func groupWatches(ws []rules.Watch) map[string]*watchGroup {
	out := map[string]*watchGroup{}
	for _, w := range ws {
		g := &watchGroup{device: w.Device, path: w.Path}
		switch {
		case w.Poll != nil:
			g.kind = kindPoll
		case w.Discovery():
			g.kind = kindDiscover
			g.observes = []*rules.Observe{w.Observe}
		default:
			g.kind = kindObserve
		}
		k := g.key()
		if have, ok := out[k]; ok {
			g = have
		} else {
			out[k] = g
		}
		switch g.kind {
		case kindPoll:
			g.polls = append(g.polls, w.Poll)
		case kindObserve:
			g.observes = append(g.observes, w.Observe)
		}
	}
	return out
}

// watcher runs one goroutine per watch group (observations, polls,
// discovery) and starts, stops and updates them as the rule set changes.
// What devices send is published through out.
type watcher struct {
	devices *deviceClients
	out     *outputs
	seen    func(device string) // a device answered: its waiting commands go out
	// presence hears of requests to devices that failed (nil: not tracked).
	presence *presence
	// asleep reports whether a learned device sleeps now (outside its
	// awake window): it is not polled then. nil: never.
	asleep func(device string) bool
	// catalogs publishes the /.well-known/core that discovery reads.
	catalogs *catalogs
	// catalogTopic is catalog.topic: the kindCatalog groups publish there.
	catalogTopic rules.Pattern
	// feed passes observations and their notifications to the proxy's
	// cache (a zero feed: none).
	feed    feed
	metrics *metrics
	log     *slog.Logger
	opts    Options
	// owns says which devices this bridge watches in a cluster; nil:
	// every device (see cluster).
	owns atomic.Pointer[ownership]

	// ctx is the parent of every watch; Shutdown ends it.
	ctx    context.Context
	cancel context.CancelFunc
	// drain ends when observations must stop waiting for the answers to
	// their deregistrations: at the shutdown's share for it (see stop).
	drain    context.Context
	endDrain context.CancelFunc

	// establishing runs the observe loops registering an observation,
	// at most opts.MaxEstablishing at once.
	establishing *establishQueue

	mu      sync.Mutex
	running map[string]*watchRun
	// learnedKeys indexes the running groups of devices without url by
	// device name (see restartLearned); stale keys are dropped lazily.
	learnedKeys map[string]map[string]struct{}
	wg          sync.WaitGroup
	active      int // observations established now
	// health holds each observed device's observation counts, for the
	// console; entries live as long as the bridge (devices come from the
	// rules and the bounded learned registry).
	health map[string]*observeHealth
	closed bool // Shutdown called: start no more watches
}

type watchRun struct {
	g      *watchGroup // guarded by watcher.mu; replaced on reload
	cancel context.CancelFunc
	done   chan struct{}
}

func newWatcher(devices *deviceClients, out *outputs, seen func(string), m *metrics, log *slog.Logger, opts Options) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	drain, endDrain := context.WithCancel(context.Background())
	return &watcher{
		devices: devices, out: out, seen: seen, metrics: m, log: log, opts: opts,
		ctx: ctx, cancel: cancel, drain: drain, endDrain: endDrain,
		running: map[string]*watchRun{}, learnedKeys: map[string]map[string]struct{}{},
		health:       map[string]*observeHealth{},
		establishing: &establishQueue{max: opts.MaxEstablishing},
	}
}

// observeHealth holds a device's observations: those established now,
// counted with those established again after one ended, re-registrations
// (RFC 7641 §3.3.1) and stale notifications dropped; and, for a learned
// device that sleeps, the wake its observe loops wait for.
type observeHealth struct {
	reobserved atomic.Uint64
	stale      atomic.Uint64

	mu   sync.Mutex
	live map[*coapside.Observation]struct{}
	// reregistered counts the re-registrations of the observations that
	// ended; the live ones keep their own count.
	reregistered uint64
	// woken is closed at the device's next wake (nil: nobody waits).
	woken chan struct{}
}

// nextWake returns a channel closed when the device next wakes.
func (h *observeHealth) nextWake() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.woken == nil {
		h.woken = make(chan struct{})
	}
	return h.woken
}

// wake tells the device's observations that it woke up (a learned
// device's first uplink after it fell asleep at slept, when the awake
// window of its previous uplink closed) and may have forgotten its
// observers while its radio was off: each live one the device sent
// nothing for since slept registers again at once (RFC 7641
// §3.3.1) instead of after Max-Age, when the device may be asleep again,
// and the loops waiting for the device (to register while it listens, or
// in backoff) go on now. An observation the device notified meanwhile is
// alive: it is left alone.
func (h *observeHealth) wake(slept time.Time) {
	h.mu.Lock()
	live := make([]*coapside.Observation, 0, len(h.live))
	for o := range h.live {
		if o.LastHeard().Before(slept) {
			live = append(live, o)
		}
	}
	if h.woken != nil {
		close(h.woken)
		h.woken = nil
	}
	h.mu.Unlock()
	for _, o := range live {
		o.Reregister()
	}
}

// up records an established observation.
func (h *observeHealth) up(o *coapside.Observation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.live == nil {
		h.live = map[*coapside.Observation]struct{}{}
	}
	h.live[o] = struct{}{}
}

// down records that observation o ended.
func (h *observeHealth) down(o *coapside.Observation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.live[o]; ok {
		delete(h.live, o)
		h.reregistered += o.Stats().Reregistrations.Load()
	}
}

// observeHealth returns device's observation counts.
func (wt *watcher) observeHealth(device string) *observeHealth {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	h := wt.health[device]
	if h == nil {
		h = &observeHealth{}
		wt.health[device] = h
	}
	return h
}

// woke tells the observations of learned device name that it woke up
// after it slept from slept on (see observeHealth.wake).
func (wt *watcher) woke(name string, slept time.Time) {
	wt.mu.Lock()
	h := wt.health[name]
	wt.mu.Unlock()
	if h != nil {
		h.wake(slept)
	}
}

// ObservationHealth is what the console shows of a device's
// observations.
type ObservationHealth struct {
	// Active is the observations established now.
	Active int `json:"active"`
	// Reregistrations counts registrations sent again after a silence
	// past Max-Age, or when a learned device woke up (RFC 7641 §3.3.1).
	Reregistrations uint64 `json:"reregistrations"`
	// Reobserved counts observations established again after one ended
	// (the device rebooted, answered an error, or did not answer a
	// re-registration).
	Reobserved   uint64 `json:"reobserved"`
	StaleDropped uint64 `json:"stale_dropped"`
}

// observationHealth returns device's observation counts; ok is false for
// a device never observed.
func (wt *watcher) observationHealth(device string) (ObservationHealth, bool) {
	wt.mu.Lock()
	h := wt.health[device]
	wt.mu.Unlock()
	if h == nil {
		return ObservationHealth{}, false
	}
	out := ObservationHealth{Reobserved: h.reobserved.Load(), StaleDropped: h.stale.Load()}
	h.mu.Lock()
	out.Active, out.Reregistrations = len(h.live), h.reregistered
	for o := range h.live {
		out.Reregistrations += o.Stats().Reregistrations.Load()
	}
	h.mu.Unlock()
	return out, true
}

// Run returns when Shutdown begins. The watches run in goroutines that
// apply starts and Shutdown waits for.
func (wt *watcher) Run(ctx context.Context) error {
	select {
	case <-wt.ctx.Done():
	case <-ctx.Done():
		wt.cancel() // not shut down: the watches end at once
		wt.endDrain()
	}
	return nil
}

// Shutdown ends every watch and waits for them (see stop).
func (wt *watcher) Shutdown(ctx context.Context) error {
	wt.stop(ctx)
	return nil
}

// apply moves the running groups to the rule set's watches: new groups
// start, vanished ones stop, groups whose device or timing changed restart,
// and the rest keep running with the new rules. It waits for the stopped
// groups (an observation waits for the answer to its deregistration) until
// ctx ends; Shutdown waits for any still running.
func (wt *watcher) apply(ctx context.Context, ws []rules.Watch, catalog []*rules.Device) (added, removed, restarted, kept int) {
	want := groupWatches(ws)
	wt.addCatalogGroups(want, catalog)
	wt.keepOwned(want)
	var stopped []*watchRun
	defer func() { // wait outside the lock: a stopping run may be in group()
		for _, run := range stopped {
			select {
			case <-run.done:
			case <-ctx.Done():
				return
			}
		}
	}()
	wt.mu.Lock()
	defer wt.mu.Unlock()
	if wt.closed {
		return 0, 0, 0, 0
	}
	for k, run := range wt.running {
		g, ok := want[k]
		if ok && run.g.sameWork(g) {
			run.g = g
			kept++
			delete(want, k)
			continue
		}
		run.cancel()
		stopped = append(stopped, run)
		delete(wt.running, k)
		if ok {
			restarted++
		} else {
			removed++
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		wt.startLocked(k, want[k])
	}
	added = len(keys) - restarted
	return added, removed, restarted, kept
}

func (wt *watcher) startLocked(key string, g *watchGroup) {
	ctx, cancel := context.WithCancel(wt.ctx)
	run := &watchRun{g: g, cancel: cancel, done: make(chan struct{})}
	wt.running[key] = run
	if g.device.Host == "" {
		wt.indexLearnedLocked(g.device.Name, key)
	}
	wt.wg.Add(1)
	finish := func() {
		close(run.done)
		wt.wg.Done()
	}
	if g.kind == kindObserve {
		wt.establishing.Go(func(release func()) { wt.observe(ctx, run, g.path, finish, release) })
		return
	}
	go func() {
		defer finish()
		switch g.kind {
		case kindPoll:
			wt.poll(ctx, run)
		case kindDiscover:
			wt.discover(ctx, run)
		case kindCatalog:
			wt.readCatalog(ctx, run)
		}
	}()
}

// stop ends every watch and waits for them. Observations are cancelled
// with GET Observe=1 (RFC 7641 §3.6), all at once and best effort: a device
// that is gone never answers, so the answers are awaited for at most half
// the time left before ctx's deadline, and the rest of the shutdown
// (flushing MQTT) keeps the other half.
func (wt *watcher) stop(ctx context.Context) {
	defer wt.endDrain()
	dctx, cancel := halfOf(ctx)
	defer cancel()
	defer context.AfterFunc(dctx, wt.endDrain)()
	wt.mu.Lock()
	wt.closed = true
	wt.cancel()
	for k, run := range wt.running {
		run.cancel()
		delete(wt.running, k)
	}
	wt.mu.Unlock()
	wt.wg.Wait()
}

// halfOf is ctx ending at half of the time ctx has left: the share of a
// shutdown that deregistrations from silent devices may wait for.
func halfOf(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok {
		return context.WithDeadline(ctx, time.Now().Add(time.Until(d)/2))
	}
	return ctx, func() {}
}

// group returns the run's current group (a reload may replace its rules).
func (wt *watcher) group(run *watchRun) *watchGroup {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return run.g
}

// observationUp counts an established observation in the metrics.
func (wt *watcher) observationUp(delta int) {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	wt.active += delta
	// Set under the lock: two changes racing to Set could leave the
	// older count exported until the next change.
	wt.metrics.observations.Set(float64(wt.active))
}

// publish sends one device representation to MQTT for every rule in rs.
func (wt *watcher) publish(ctx context.Context, g *watchGroup, path string, n *coapside.Notification, rs []ruleOutput) {
	in := &inbound{
		Payload:       n.Payload,
		ContentFormat: -1,
		Path:          path,
		Device:        g.device.Name,
		Received:      n.Received,
	}
	if in.Received.IsZero() {
		in.Received = time.Now()
	}
	if cf, ok := n.Options.ContentFormat(); ok {
		in.ContentFormat = int(cf)
	}
	caps := rules.Captures{{Name: "device", Value: g.device.Name}, {Name: "path", Value: strings.TrimPrefix(path, "/")}}
	for _, r := range rs {
		_ = wt.out.publish(ctx, r.name, r.out, caps, in) // counted and logged there
	}
}

// ruleOutput is one rule's publishing settings.
type ruleOutput struct {
	name string
	out  *rules.Output
}

func observeOutputs(os []*rules.Observe) []ruleOutput {
	out := make([]ruleOutput, len(os))
	for i, o := range os {
		out[i] = ruleOutput{o.Name, &o.Output}
	}
	return out
}

// deviceRequest builds the GET of a device resource the way a command's
// request is built: the device's own Uri-Host and Uri-Port options
// (rules.Device.Options) and one Uri-Path per segment of path, with no URL
// to parse back. URL names the target in logs and errors; the address is
// resolved once, when the request is prepared (deviceClients.prepare).
func deviceRequest(d *rules.Device, path string) (*coapside.Request, error) {
	segs := splitPath(path)
	// A copy: the device's options are shared by every request to it.
	opts, err := uri.AppendPath(slices.Clone(d.Options), segs)
	if err != nil {
		return nil, err
	}
	u := &url.URL{Scheme: uri.SchemeName(d.Secure), Host: d.Host}
	if len(segs) > 0 {
		u.Path = "/" + strings.Join(segs, "/")
	}
	return &coapside.Request{Method: message.GET, Type: message.Confirmable, Options: opts, URL: u}, nil
}

// splitPath turns "/a/b" into its segments ("/" has none).
func splitPath(path string) []string {
	p := strings.TrimPrefix(path, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// reasonOf maps a request error to a metric reason.
func reasonOf(err error) string {
	if errors.Is(err, coapside.ErrUnreachable) {
		return reasonUnreachable // ICMP port unreachable: nothing listens there
	}
	if errors.Is(err, coapside.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return reasonTimeout
	}
	if errors.Is(err, rules.ErrUnknownDevice) {
		return reasonUnknownDevice // a device without url not learned yet
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

// backoff is exponential with full jitter, between min and max.
type backoff struct {
	min, max, cur time.Duration
}

// next returns the wait before the next attempt and doubles the ceiling.
func (b *backoff) next() time.Duration {
	if b.cur < b.min {
		b.cur = b.min
	}
	d := b.cur/2 + jitter(b.cur/2+1)
	b.cur = min(2*b.cur, b.max)
	return d
}

// reset starts again from min after a success.
func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// failureLog logs a watch's repeated failures once at Warn, then at Debug
// until it recovers (logged at Info), so a device that is down does not
// flood the log; every failure is still counted in the metrics.
type failureLog struct {
	log     *slog.Logger
	failing bool
}

// fail logs a failure.
func (f *failureLog) fail(msg string, args ...any) {
	if f.failing {
		f.log.Debug(msg, args...)
		return
	}
	f.failing = true
	f.log.Warn(msg, append(args, "note", "further failures are logged at debug level until it recovers")...)
}

// ok logs the recovery after failures.
func (f *failureLog) ok(msg string, args ...any) {
	if f.failing {
		f.failing = false
		f.log.Info(msg, args...)
	}
}
