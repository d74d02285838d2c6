package observe

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// Defaults for Options.
const (
	DefaultConEvery     = 10
	DefaultConInterval  = 24 * time.Hour
	DefaultMaxObservers = 100_000
	// DefaultRetryInterval is how often observers whose notification was
	// deferred (ErrDeferred) are tried again when CheckInterval is 0;
	// otherwise it is a quarter of CheckInterval.
	DefaultRetryInterval = time.Second
)

// Options configure a Notifier. Zero values take the defaults.
type Options struct {
	// Workers is the number of goroutines calling the Sender. With a
	// blocking Sender, this many observers can have a notification in
	// flight at once; an AsyncSender needs few. Default 4*GOMAXPROCS.
	Workers int
	// ConEvery makes at least every ConEvery-th notification to an observer
	// confirmable (RFC 7641 §4.5). Default 10; 1 makes all confirmable.
	ConEvery int
	// ConInterval makes a notification confirmable when the observer's last
	// confirmed contact is this old (RFC 7641 §4.5: at least every 24 h).
	ConInterval time.Duration
	// MaxObservers bounds registrations across all resources. Default
	// 100,000.
	MaxObservers int
	// CheckInterval, when set, bounds how long an observer may go without a
	// confirmed contact even when its resource does not change: Run
	// checks the observers every quarter interval and sends one whose last
	// confirmed contact is CheckInterval old the resource's latest state
	// as a confirmable notification, so an observer that is gone is
	// removed when that times out (RFC 7641 §4.5). ConInterval is capped
	// at CheckInterval. 0 checks nothing.
	CheckInterval time.Duration
	// Current, if set, gives the state of path for a check when no state
	// was notified since its first registration; ok false skips it.
	Current func(path string) (st State, ok bool)
	// OnDeregister, if set, is called (without locks held) whenever an
	// observer is removed, with the reason: ErrReset, ErrTimeout,
	// ErrUnreachable, ErrFinal, ErrDeregistered, or ErrReplaced.
	OnDeregister func(o Observer, reason error)
	// Now is the clock; default time.Now.
	Now func() time.Time
	// FirstSeq, if set, gives the Observe value of a new registration's
	// response instead of the clock (RFC 7641 §4.4 leaves the source to the
	// server). A constrained device counts from a low number after every
	// boot; a simulator sets this to behave like one.
	FirstSeq func() uint32
	// Logger receives debug logs of send failures; default discards.
	Logger *slog.Logger
}

// State is a resource representation to notify.
type State struct {
	// Code is the response code; 0 means 2.05 Content. A 4.xx/5.xx code
	// ends the observation after it is sent (RFC 7641 §3.2, §4.2).
	Code message.Code
	// Payload is the representation; it must not be modified after Notify.
	Payload []byte
	// ContentFormat of Payload.
	ContentFormat uint16
	// NoContentFormat: the representation has no Content-Format option
	// (ContentFormat is then not sent).
	NoContentFormat bool
	// MaxAge in seconds for the Max-Age option (RFC 7641 §4.3.1).
	MaxAge uint32
}

// Observer identifies one registration: a client endpoint and the token
// of its registration request, on a resource path (RFC 7641 §4.1).
type Observer struct {
	Path     string
	Endpoint string
	Token    string
}

// Notification is one message the Sender must transmit: a response with
// the registration's token, an Observe option of Seq, and State.
type Notification struct {
	Observer
	State
	// Seq is the Observe option value (24 bits).
	Seq uint32
	// Confirmable selects CON (true) or NON.
	Confirmable bool
}

// Sender transmits notifications. For a NON notification Send returns once
// the message is written. For a CON it returns when the message is
// acknowledged (nil), answered with RST (an error wrapping ErrReset) or
// given up after retransmissions (an error wrapping ErrTimeout). An RST to a
// NON notification can be reported through Notifier.Reset. Send must return
// promptly when ctx is canceled. The Payload is shared by all observers of
// the state and must not be modified.
type Sender interface {
	Send(ctx context.Context, n Notification) error
}

// SenderFunc adapts a function to Sender.
type SenderFunc func(ctx context.Context, n Notification) error

// Send calls f.
func (f SenderFunc) Send(ctx context.Context, n Notification) error { return f(ctx, n) }

// AsyncSender is an optional interface of a Sender that can start a
// transmission without blocking and report its outcome later, for example
// from a retransmission scheduler. When the Sender implements it, workers
// never wait on a confirmable notification. done must be called exactly
// once, with the same meaning as Send's result.
type AsyncSender interface {
	SendAsync(ctx context.Context, n Notification, done func(error))
}

// Registration is the result of Register.
type Registration struct {
	// Seq is the Observe value for the registration's response.
	Seq uint32
	// Replaced is true when an earlier registration with the same endpoint
	// and token was replaced (RFC 7641 §4.1).
	Replaced bool
}

// Stats counts Notifier events.
type Stats struct {
	Observers    int    // registered now
	Sent         uint64 // notifications delivered to the Sender successfully
	Confirmable  uint64 // of which confirmable
	Superseded   uint64 // pending states replaced by a newer one before sending
	Resets       uint64 // observers removed after RST
	Timeouts     uint64 // unacknowledged CONs; each removes every observer of its endpoint
	Unreachable  uint64 // observers removed because their endpoint reported port unreachable
	SendErrors   uint64 // other Sender errors (observer kept)
	Deferred     uint64 // notifications deferred (ErrDeferred), at most one per observer per retry tick
	Deregistered uint64 // all removals, any reason
	Checks       uint64 // confirmable notifications of an unchanged state sent to check an observer (CheckInterval)
}

type obsKey struct{ endpoint, token string }

type resource struct {
	path      string
	observers []*observer
	last      *State // the latest state notified, for checks; nil before
}

// observer is one registration's state. Guarded by Notifier.mu.
type observer struct {
	res      *resource
	idx      int // position in res.observers
	key      obsKey
	seq      uint32
	sinceCON uint32
	lastCON  int64 // unix nanoseconds of the last confirmed contact
	pending  *State
	inflight bool
	queued   bool
	removed  bool
	deferred bool // waits for the next retry tick (ErrDeferred)
}

func (o *observer) public() Observer {
	return Observer{Path: o.res.path, Endpoint: o.key.endpoint, Token: o.key.token}
}

// Notifier is the server-side observer registry and notification fan-out
// (RFC 7641 §4). Register and Deregister follow requests; Notify hands a new
// resource state to every observer of a path. Each observer has at most one
// notification in flight; while it is in flight newer states replace each
// other and only the latest is sent next (RFC 7641 §4.5.2), so a slow
// observer never delays the others. Run starts the workers; all methods are
// safe for concurrent use.
type Notifier struct {
	sender Sender
	async  AsyncSender
	opts   Options

	mu        sync.Mutex
	cond      *sync.Cond
	resources map[string]*resource
	index     map[obsKey]*observer
	endpoints map[string]map[string]*observer // endpoint, token: index by endpoint
	queue     ring
	deferred  []*observer // waiting for the next retry tick
	running   bool
	closed    bool
	stats     Stats
}

// New returns a Notifier sending through s. No goroutine runs until Run.
func New(s Sender, opts Options) *Notifier {
	if opts.Workers <= 0 {
		opts.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if opts.ConEvery <= 0 {
		opts.ConEvery = DefaultConEvery
	}
	if opts.ConInterval <= 0 {
		opts.ConInterval = DefaultConInterval
	}
	if opts.CheckInterval > 0 {
		opts.ConInterval = min(opts.ConInterval, opts.CheckInterval)
	}
	if opts.MaxObservers <= 0 {
		opts.MaxObservers = DefaultMaxObservers
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{
		sender:    s,
		opts:      opts,
		resources: make(map[string]*resource),
		index:     make(map[obsKey]*observer),
		endpoints: make(map[string]map[string]*observer),
	}
	n.async, _ = s.(AsyncSender)
	n.cond = sync.NewCond(&n.mu)
	return n
}

// Register adds an observer of path for the client at endpoint with the
// token of its GET with Observe=0 (RFC 7641 §3.1, §4.1). A registration with
// the same endpoint and token replaces the earlier one, even on another
// path. The returned Seq goes into the Observe option of the response.
func (n *Notifier) Register(path, endpoint string, token []byte) (Registration, error) {
	now := n.opts.Now()
	k := obsKey{endpoint, string(token)}
	var replacedObs Observer
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return Registration{}, ErrClosed
	}
	old, replaced := n.index[k]
	if replaced {
		replacedObs = old.public()
		n.removeLocked(old)
	} else if len(n.index) >= n.opts.MaxObservers {
		n.mu.Unlock()
		return Registration{}, fmt.Errorf("%w: limit %d", ErrTooManyObservers, n.opts.MaxObservers)
	}
	res := n.resources[path]
	if res == nil {
		res = &resource{path: path}
		n.resources[path] = res
	}
	// RFC 7641 §4.4: a new registration starts from a local clock, so a
	// restarted server does not repeat the values of its previous run.
	seq := uint32(now.Unix())
	if n.opts.FirstSeq != nil {
		seq = n.opts.FirstSeq()
	}
	o := &observer{
		res: res, idx: len(res.observers), key: k,
		seq:     seq & SeqMask,
		lastCON: now.UnixNano(),
	}
	if replaced {
		// A client re-registering with the same token judges the response
		// against the notifications it already has (RFC 7641 §3.3.1), so
		// the sequence continues.
		o.seq = NextSeq(old.seq)
	}
	res.observers = append(res.observers, o)
	n.index[k] = o
	byToken := n.endpoints[endpoint]
	if byToken == nil {
		byToken = make(map[string]*observer)
		n.endpoints[endpoint] = byToken
	}
	byToken[k.token] = o
	seq = o.seq
	n.mu.Unlock()
	if replaced {
		n.deregistered(replacedObs, ErrReplaced)
	}
	return Registration{Seq: seq, Replaced: replaced}, nil
}

// Deregister removes the observer with endpoint and token, after a GET with
// Observe=1 (RFC 7641 §3.6). It reports whether one was registered.
func (n *Notifier) Deregister(endpoint string, token []byte) bool {
	return n.removeKey(obsKey{endpoint, string(token)}, ErrDeregistered)
}

// Reset removes the observer with endpoint and token after the client
// answered a notification with RST (RFC 7641 §3.6), for transports that
// learn about an RST outside Send (for example one to a NON notification).
func (n *Notifier) Reset(endpoint string, token []byte) bool {
	return n.removeKey(obsKey{endpoint, string(token)}, ErrReset)
}

func (n *Notifier) removeKey(k obsKey, reason error) bool {
	n.mu.Lock()
	o, ok := n.index[k]
	var pub Observer
	if ok {
		pub = o.public()
		n.removeLocked(o)
		if reason == ErrReset {
			n.stats.Resets++
		}
	}
	n.mu.Unlock()
	if ok {
		n.deregistered(pub, reason)
	}
	return ok
}

// Unreachable removes every observer of endpoint, whose address reported
// that nothing listens there any more (ICMP port unreachable), with the
// reason ErrUnreachable. It returns how many were removed.
func (n *Notifier) Unreachable(endpoint string) int {
	n.mu.Lock()
	gone := n.removeEndpointLocked(endpoint)
	n.stats.Unreachable += uint64(len(gone))
	n.mu.Unlock()
	for _, o := range gone {
		n.deregistered(o, ErrUnreachable)
	}
	return len(gone)
}

// DeregisterEndpoint removes every observer of endpoint, for a peer known to
// be gone (a closed DTLS session). It returns how many were removed.
func (n *Notifier) DeregisterEndpoint(endpoint string) int {
	n.mu.Lock()
	gone := n.removeEndpointLocked(endpoint)
	n.mu.Unlock()
	for _, o := range gone {
		n.deregistered(o, ErrDeregistered)
	}
	return len(gone)
}

// removeEndpointLocked removes every observer of endpoint and returns them.
func (n *Notifier) removeEndpointLocked(endpoint string) []Observer {
	byToken := n.endpoints[endpoint]
	if len(byToken) == 0 {
		return nil
	}
	gone := make([]Observer, 0, len(byToken))
	for _, o := range byToken {
		gone = append(gone, o.public())
		n.removeLocked(o)
	}
	return gone
}

// removeLocked unlinks o from its resource and the index.
func (n *Notifier) removeLocked(o *observer) {
	if o.removed {
		return
	}
	o.removed = true
	o.pending = nil
	res := o.res
	last := len(res.observers) - 1
	res.observers[o.idx] = res.observers[last]
	res.observers[o.idx].idx = o.idx
	res.observers[last] = nil
	res.observers = res.observers[:last]
	if len(res.observers) == 0 {
		delete(n.resources, res.path)
	}
	delete(n.index, o.key)
	if byToken := n.endpoints[o.key.endpoint]; byToken != nil {
		delete(byToken, o.key.token)
		if len(byToken) == 0 {
			delete(n.endpoints, o.key.endpoint)
		}
	}
	n.stats.Deregistered++
}

func (n *Notifier) deregistered(o Observer, reason error) {
	if n.opts.OnDeregister != nil {
		n.opts.OnDeregister(o, reason)
	}
}

// Observers returns the number of observers of path.
func (n *Notifier) Observers(path string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if res := n.resources[path]; res != nil {
		return len(res.observers)
	}
	return 0
}

// Stats returns a snapshot of the counters.
func (n *Notifier) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.stats
	s.Observers = len(n.index)
	return s
}
