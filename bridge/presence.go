package bridge

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/rules"
)

// Default presence thresholds (devices.awake, devices.offline_after).
const (
	DefaultAwake        = 5 * time.Second
	DefaultOfflineAfter = 10 * time.Minute
)

// presenceState is what a presence document says of a device.
type presenceState uint8

// A device's presence.
const (
	presenceNone    presenceState = iota // never published
	presenceOnline                       // heard from lately
	presenceAsleep                       // pushed, but not within devices.awake
	presenceOffline                      // silent past devices.offline_after, or a request to it failed
)

func (s presenceState) String() string {
	switch s {
	case presenceOnline:
		return "online"
	case presenceAsleep:
		return "asleep"
	case presenceOffline:
		return "offline"
	}
	return "unknown"
}

// Why a device is offline: the presence document's reason.
const (
	// offlineSilent: a device that pushes sent nothing for offline_after.
	offlineSilent = "silent"
	// offlineTimeout: a request to the device was not answered.
	offlineTimeout = "timeout"
	// offlineUnreachable: a request to the device could not be sent (no
	// route, refused, a failed DTLS handshake, a name that does not
	// resolve).
	offlineUnreachable = "unreachable"
)

// offlineReason says whether a failed request to a device tells that it
// is offline, and why. Failures that say nothing of the device (the
// bridge stopping, a rule's bad path, a device not learned yet) give "".
func offlineReason(err error) string {
	var netErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, coapside.ErrCanceled),
		errors.Is(err, coapside.ErrClosed), errors.Is(err, rules.ErrUnknownDevice):
		return ""
	case errors.Is(err, coapside.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return offlineTimeout
	case errors.Is(err, coapside.ErrUnreachable):
		// The device's port answered with ICMP port unreachable: nothing
		// listens there (the device is down or restarting).
		return offlineUnreachable
	case errors.As(err, &netErr), errors.As(err, &dnsErr):
		return offlineUnreachable
	}
	return ""
}

// presenceEntry is the tracker's record of one device: kept small, as a
// bridge may track a whole learned fleet (see TestPresenceAtScale).
type presenceEntry struct {
	name   string
	seen   int64  // unix nanoseconds of the latest sign of life; 0: never
	due    int64  // when the janitor looks at it next (idx >= 0)
	reason string // why it is offline
	idx    int32  // position in the janitor's heap; -1 when not in it
	state  presenceState
	// pushes: the device was learned from its own requests, so time moves
	// it online → asleep → offline between them.
	pushes bool
	dirty  bool // waiting in the publish queue
	// removed: the device left the rules and the registry; its retained
	// document is to be cleared, then the entry dropped (unless it is
	// heard from again first).
	removed bool
}

// presenceHeap orders the entries the janitor must look at by due time.
type presenceHeap []*presenceEntry

func (h presenceHeap) Len() int           { return len(h) }
func (h presenceHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h presenceHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = int32(i), int32(j)
}
func (h *presenceHeap) Push(x any) {
	e := x.(*presenceEntry)
	e.idx = int32(len(*h))
	*h = append(*h, e)
}
func (h *presenceHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.idx = -1
	return e
}

// presenceLocator tells where a device is, for its presence document:
// the address it last spoke from (learned) or its url's (listed), and the
// transport. ok is false for a name that is neither learned nor listed.
type presenceLocator func(name string) (address string, via Via, ok bool)

// presence tracks whether devices are online, asleep or offline and
// publishes a retained document on devices.presence_topic whenever that
// changes (or a device moved): not on every uplink, so a device pushing
// every second costs no MQTT traffic while its state holds.
//
// Signs of life come from the learned registry (every request naming a
// device), the answers of observed and polled devices, and commands; a
// failed request marks a device offline with a reason. A device that
// pushes turns asleep awake after its latest request and offline after
// offlineAfter: one janitor goroutine keeps those deadlines in a heap,
// which it revisits lazily (an uplink only moves the time, the janitor
// pushes the deadline on when it finds it moved). Documents wait in a
// queue that holds each device at most once, and a few publishers hand
// them to MQTT, always with the device's state at that moment, so the
// latest retained document is the latest state.
type presence struct {
	topic rules.Pattern
	// publishing: devices.presence_topic is set. Without it the states
	// are still tracked (the status page shows them), nothing published.
	publishing   bool
	awake        time.Duration
	offlineAfter time.Duration
	resolution   time.Duration // janitor slack: deadlines this close are handled together
	pub          publisher
	locate       presenceLocator
	log          *slog.Logger
	now          func() time.Time

	mu      sync.Mutex
	devices map[string]*presenceEntry
	due     presenceHeap
	queue   []*presenceEntry // waiting to be published, each once
	closed  bool
	byState [presenceOffline + 1]int // devices per state

	wake   chan struct{} // the earliest deadline moved (buffer 1)
	queued chan struct{} // the queue got a document (buffer 1)

	ctx    context.Context // ends at Shutdown; the janitor and publishers stop
	cancel context.CancelFunc
	flush  context.Context // Shutdown's share for publishing what is queued
	wg     sync.WaitGroup
	start  sync.Once

	devicesGauge *prometheus.GaugeVec   // state
	publishes    *prometheus.CounterVec // result
}

// newPresence returns the tracker for cfg: it publishes documents when
// devices.presence_topic is set, and only tracks the states otherwise
// (every method of a nil *presence does nothing). cfg has been validated.
func newPresence(cfg DevicesConfig, pub publisher, locate presenceLocator, reg prometheus.Registerer, log *slog.Logger) *presence {
	var topic rules.Pattern
	if cfg.PresenceTopic != "" {
		var err error
		if topic, err = rules.ParseDeviceTopic(cfg.PresenceTopic); err != nil {
			return nil // Validate refused it
		}
	}
	awake, offline := cfg.presenceThresholds()
	ctx, cancel := context.WithCancel(context.Background())
	p := &presence{
		topic: topic, publishing: cfg.PresenceTopic != "", awake: awake, offlineAfter: offline,
		resolution: min(max(awake/20, 10*time.Millisecond), time.Second),
		pub:        pub, locate: locate, log: log, now: time.Now,
		devices: map[string]*presenceEntry{},
		wake:    make(chan struct{}, 1), queued: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, flush: context.Background(),
	}
	p.devicesGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bridge_presence_devices",
		Help: "Devices by presence state (online, asleep, offline).",
	}, []string{"state"})
	p.publishes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridge_presence_publishes_total",
		Help: "Presence documents handed to MQTT: published (acknowledged), buffered (held for the broker, delivered on reconnect), retried (refused for now, e.g. a full offline buffer; published again later), refused (an invalid topic or payload: never published).",
	}, []string{"result"})
	for _, s := range []presenceState{presenceOnline, presenceAsleep, presenceOffline} {
		p.devicesGauge.WithLabelValues(s.String())
	}
	for _, r := range []string{"published", "buffered", "retried", "refused"} {
		p.publishes.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(p.devicesGauge, p.publishes)
	}
	return p
}

// learn takes what the learned registry was told (its hook).
func (p *presence) learn(ev LearnEvent) {
	if p == nil {
		return
	}
	switch ev.Kind {
	case Learned, Moved, Seen:
		// A Learned device's name is the registry's own copy: shared.
		p.heard(ev.Device.Name, ev.Device.LastSeen, true, ev.Kind == Moved, ev.Kind == Learned)
	}
}

// answered records that a device answered a request (an observation, a
// poll, a command, a ping): it is online. Pushes come through learn.
func (p *presence) answered(name string) {
	if p == nil || name == "" {
		return
	}
	p.heard(name, p.now(), false, false, false)
}

// heard records a sign of life at t. pushes marks a device learned from
// its own requests; moved republishes its document (a new address) even
// when its state holds; owned says name is not a slice of a request and
// may be kept as it is.
func (p *presence) heard(name string, t time.Time, pushes, moved, owned bool) {
	ts := t.UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.devices[name]
	if e == nil {
		if p.closed || (!pushes && !p.known(name)) {
			return // the set of devices tracked is bounded by the rules and the registry
		}
		if !owned {
			name = strings.Clone(name)
		}
		e = &presenceEntry{name: name, idx: -1}
		p.devices[name] = e
	}
	if e.removed {
		if !p.known(name) {
			return // a late answer from a device the rules dropped
		}
		e.removed = false
	}
	if ts > e.seen {
		e.seen = ts
	}
	e.pushes = e.pushes || pushes
	if e.state != presenceOnline || moved {
		p.setLocked(e, presenceOnline, "")
	}
	if e.pushes {
		p.scheduleLocked(e, e.seen+int64(p.awake))
	}
}

// known reports whether name is a device the bridge knows (learned or
// listed); called with p.mu held, for a name seen the first time.
func (p *presence) known(name string) bool {
	_, _, ok := p.locate(name)
	return ok
}

// heardSince reports whether the device gave a sign of life (a push, an
// answer) after t.
func (p *presence) heardSince(name string, t time.Time) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.devices[name]
	return e != nil && e.seen > t.UnixNano()
}

// unreachable records that a request to a device, sent at sent, failed
// with err; a failure that tells the device is offline marks it so,
// unless the device gave a sign of life since the request left (it pushed
// while the request waited for its answer: it is not offline).
func (p *presence) unreachable(name string, err error, sent time.Time) {
	if p == nil || name == "" {
		return
	}
	reason := offlineReason(err)
	if reason == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.devices[name]
	if e == nil {
		if p.closed || !p.known(name) {
			return
		}
		e = &presenceEntry{name: strings.Clone(name), idx: -1}
		p.devices[e.name] = e
	}
	if e.seen >= sent.UnixNano() {
		return
	}
	if e.removed {
		if !p.known(name) {
			return
		}
		e.removed = false
	}
	if e.idx >= 0 {
		heap.Remove(&p.due, int(e.idx))
	}
	if e.state != presenceOffline || e.reason != reason {
		p.setLocked(e, presenceOffline, reason)
	}
}

// setLocked moves e to state s, counts it and queues its document.
func (p *presence) setLocked(e *presenceEntry, s presenceState, reason string) {
	if e.state != s {
		if e.state != presenceNone {
			p.devicesGauge.WithLabelValues(e.state.String()).Dec()
		}
		p.devicesGauge.WithLabelValues(s.String()).Inc()
		p.byState[e.state]--
		p.byState[s]++
	}
	e.state, e.reason = s, reason
	if e.dirty || p.closed || !p.publishing {
		return
	}
	e.dirty = true
	p.queue = append(p.queue, e)
	select {
	case p.queued <- struct{}{}:
	default:
	}
}

// prune forgets the devices that are neither listed in the rules nor
// learned any more (a reload removed them): they leave the counts and the
// console at once, and with a presence topic their retained documents
// are cleared (an empty retained message), so that no consumer keeps
// reading the last state of a device that no longer exists. It returns
// how many it forgot.
func (p *presence) prune() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for name, e := range p.devices {
		if e.removed || p.known(name) {
			continue
		}
		n++
		if e.idx >= 0 {
			heap.Remove(&p.due, int(e.idx))
		}
		if e.state != presenceNone {
			p.devicesGauge.WithLabelValues(e.state.String()).Dec()
			p.byState[e.state]--
		}
		e.state, e.reason, e.removed = presenceNone, "", true
		if !p.publishing || p.closed {
			delete(p.devices, name)
			continue
		}
		if !e.dirty {
			e.dirty = true
			p.queue = append(p.queue, e)
			select {
			case p.queued <- struct{}{}:
			default:
			}
		}
	}
	return n
}

// scheduleLocked makes the janitor look at e by due at the latest. A
// deadline already earlier is kept: the janitor moves it on when it finds
// the device heard from since.
func (p *presence) scheduleLocked(e *presenceEntry, due int64) {
	switch {
	case e.idx < 0:
		e.due = due
		heap.Push(&p.due, e)
	case due < e.due:
		e.due = due
		heap.Fix(&p.due, int(e.idx))
	default:
		return
	}
	if e.idx == 0 {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// expire moves the devices whose deadline passed by now on: asleep once
// awake passed since their latest request, offline once offlineAfter
// did. It handles at most limit deadlines and returns the earliest one
// left (0: none) and whether it stopped at the limit.
func (p *presence) expire(now time.Time, limit int) (next int64, more bool) {
	ts := now.UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := 0; len(p.due) > 0; n++ {
		e := p.due[0]
		if e.due > ts {
			return e.due, false
		}
		if n == limit {
			return e.due, true
		}
		idle := ts - e.seen
		switch {
		case idle < int64(p.awake):
			e.due = e.seen + int64(p.awake)
			heap.Fix(&p.due, 0)
		case idle < int64(p.offlineAfter):
			if e.state == presenceOnline {
				p.setLocked(e, presenceAsleep, "")
			}
			e.due = e.seen + int64(p.offlineAfter)
			heap.Fix(&p.due, 0)
		default:
			heap.Pop(&p.due)
			p.setLocked(e, presenceOffline, offlineSilent)
		}
	}
	return 0, false
}

// presenceBatch bounds the deadlines handled under one hold of the lock,
// so that uplinks are not held up while a whole fleet falls asleep.
const presenceBatch = 1024

// Run starts the janitor and the publishers and returns once Shutdown
// begins (Shutdown waits for them) or ctx ends (they stop at once).
func (p *presence) Run(ctx context.Context) error {
	p.start.Do(func() {
		p.wg.Add(1)
		go p.janitor()
		if p.publishing {
			p.wg.Add(presencePublishers)
			for range presencePublishers {
				go p.publisher()
			}
		}
	})
	select {
	case <-p.ctx.Done():
	case <-ctx.Done():
		p.cancel()
	}
	return nil
}

// Shutdown publishes the documents still queued until ctx ends, then
// stops the janitor and the publishers and waits for them. Documents are
// not rewritten to say the bridge stopped: its status topic says that.
func (p *presence) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	flush, cancel := context.WithTimeout(ctx, presenceFlush)
	defer cancel()
	p.closed = true
	p.flush = flush
	p.mu.Unlock()
	p.start.Do(func() {}) // Run after Shutdown starts nothing
	p.cancel()
	p.wg.Wait()
	return nil
}

// presenceFlush is the share of the shutdown spent publishing the
// documents still queued; the rest is the MQTT client's, to deliver them.
const presenceFlush = time.Second

// janitor sleeps until the earliest deadline (rounded up by resolution,
// so a fleet's deadlines are taken in a few wake-ups) and expires what is
// due.
func (p *presence) janitor() {
	defer p.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next, more := p.expire(p.now(), presenceBatch)
		wait := time.Hour
		switch {
		case more:
			wait = 0
		case next != 0:
			wait = max(time.Until(time.Unix(0, next)), 0) + p.resolution
		}
		t.Reset(wait)
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
		case <-t.C:
		}
	}
}

// presenceView is the tracker's record of a device, for the console.
type presenceView struct {
	state  presenceState
	reason string
	seen   int64 // unix nanoseconds of the latest sign of life; 0: never
}

// view calls fn with the record of every device in names the tracker
// holds, under one hold of the lock; fn must not block.
func (p *presence) view(names []string, fn func(i int, v presenceView)) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, n := range names {
		if e := p.devices[n]; e != nil {
			fn(i, presenceView{state: e.state, reason: e.reason, seen: e.seen})
		}
	}
}

// counts returns how many devices are online, asleep and offline.
func (p *presence) counts() (online, asleep, offline int) {
	if p == nil {
		return 0, 0, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byState[presenceOnline], p.byState[presenceAsleep], p.byState[presenceOffline]
}
