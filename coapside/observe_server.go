package coapside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/observe"
)

// ObserveOptions configures server-side Observe (RFC 7641). Zero values take
// the defaults of the observe package.
type ObserveOptions struct {
	// ConEvery makes at least every ConEvery-th notification confirmable (10).
	ConEvery int
	// ConInterval makes a notification confirmable when the observer was
	// last confirmed this long ago (24 h).
	ConInterval time.Duration
	// MaxObservers bounds registrations across all resources (100,000).
	// Beyond it a GET with Observe=0 is answered without Observe (§4.1).
	MaxObservers int
	// MaxObserversPerSource bounds the registrations of one source address
	// (DefaultMaxObserversPerSource, at most MaxObservers), so that one
	// host cannot take every slot of MaxObservers. Beyond it, too, a
	// registration is answered without Observe.
	MaxObserversPerSource int
	// CheckInterval, when set, bounds how long an observer goes without a
	// confirmed contact: one that has acknowledged no confirmable
	// notification for this long gets the current state as a confirmable
	// notification even when the resource has not changed, and is removed
	// when that times out or is reset (RFC 7641 §4.5). It also caps
	// ConInterval. 0 leaves liveness to ConEvery and ConInterval.
	CheckInterval time.Duration
	// Workers is the number of notification workers (4*GOMAXPROCS).
	Workers int
	// MaxAge is the Max-Age (seconds) put on notifications whose state has
	// none; 0 leaves the option out, which means 60 s (RFC 7252 §5.10.5).
	MaxAge uint32
	// BlockSize is the largest notification payload sent in one message
	// (16..1024, default 1024). A bigger representation is sent as block 0
	// with Block2 and an ETag; the client fetches the rest (RFC 7959 §3.4).
	// A smaller Block2 size in the registration request is honoured.
	BlockSize int
	// ResetMemory is how many recent NON notifications are remembered so
	// that an RST answering one removes its observer (RFC 7641 §3.6).
	// Default DefaultResetMemory.
	ResetMemory int
	// OnDeregister, if set, is called whenever an observer is removed, with
	// the reason (observe.ErrReset, ErrTimeout, ErrDeregistered, ...).
	OnDeregister func(o observe.Observer, reason error)
	// FirstSeq, if set, gives the Observe value of a new registration's
	// response instead of the clock (see observe.Options.FirstSeq).
	FirstSeq func() uint32
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// ObserveServer makes handlers observable: wrap them with Observable, run it
// with Run, and call Notify when a resource changes. It keeps the observer
// registry (observe.Notifier) and sends notifications through the endpoint a
// registration arrived on, with NON by default, a CON at least every
// ConEvery notifications or ConInterval, latest-value-wins for slow observers
// (RFC 7641 §4.5), and deregistration on GET Observe=1, on RST to a
// confirmable notification and on a confirmable notification that times out.
type ObserveServer struct {
	n    *observe.Notifier
	opts ObserveOptions
	log  *slog.Logger
	szx  uint8

	downgraded atomic.Uint64 // CON notifications sent as NON (peer queue full)
	resets     *resetMemory  // recent NON notifications, to match RSTs
	quota      *sourceQuota  // observers per source and in total
	limits     limitCounter

	mu      sync.Mutex
	targets map[obsID]obsTarget  // where each observer's notifications go
	paths   map[string]*obsRoute // how to re-run the handler of a path
	cons    map[obsID]*outgoing  // each observer's latest CON notification
	// answers has the observer registered by each answer to an Echo
	// challenge, by the client endpoint, resource and Echo value.
	answers map[echoAnswer]obsID
}

// echoAnswer is a registration of path repeated with an Echo value from
// one client endpoint (RFC 9175 §2.4): one challenge is answered by one
// registration. A client may receive a challenge twice (its request's
// retransmission crossed it, and the duplicate is answered the same,
// RFC 7252 §4.5) and answer each copy, with a new token each time
// (libcoap does); the later answer replaces the earlier, so the client
// does not hear every change twice.
type echoAnswer struct{ endpoint, path, echo string }

// obsID is an observer's notifier endpoint key and token.
type obsID struct{ endpoint, token string }

// obsTarget is where one observer's notifications are sent.
type obsTarget struct {
	ep   *Endpoint
	addr net.Addr
	szx  uint8
	// answer is set when the registration answered an Echo challenge.
	answer echoAnswer
}

// obsRoute re-runs an observable handler for a path.
type obsRoute struct {
	h   Handler
	req Request // template: the latest registration request
}

// NewObserveServer returns an ObserveServer; call Run to start sending.
func NewObserveServer(opts ObserveOptions) (*ObserveServer, error) {
	size := opts.BlockSize
	if size == 0 {
		size = block.MaxSize
	}
	szx, err := block.SZXForSize(size)
	if err != nil {
		return nil, fmt.Errorf("coap observe: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &ObserveServer{
		opts:    opts,
		log:     log,
		szx:     szx,
		targets: make(map[obsID]obsTarget),
		paths:   make(map[string]*obsRoute),
		cons:    make(map[obsID]*outgoing),
		answers: make(map[echoAnswer]obsID),
		resets:  newResetMemory(opts.ResetMemory),
	}
	if opts.MaxObservers <= 0 {
		opts.MaxObservers = observe.DefaultMaxObservers
	}
	if opts.MaxObserversPerSource <= 0 {
		opts.MaxObserversPerSource = DefaultMaxObserversPerSource
	}
	s.opts = opts
	s.quota = newSourceQuota(opts.MaxObserversPerSource, opts.MaxObservers)
	s.n = observe.New(notifySender{s}, observe.Options{
		Workers:       opts.Workers,
		ConEvery:      opts.ConEvery,
		ConInterval:   opts.ConInterval,
		MaxObservers:  opts.MaxObservers,
		CheckInterval: opts.CheckInterval,
		Current:       s.current,
		OnDeregister:  s.deregistered,
		FirstSeq:      opts.FirstSeq,
		Logger:        log,
	})
	return s, nil
}

// Run sends notifications until ctx ends; then it waits for the workers and
// returns nil. It may be called once.
func (s *ObserveServer) Run(ctx context.Context) error { return s.n.Run(ctx) }

// Stats returns the notifier's counters.
func (s *ObserveServer) Stats() observe.Stats { return s.n.Stats() }

// LimitHits returns how often MaxObservers and MaxObserversPerSource
// refused a registration.
func (s *ObserveServer) LimitHits() LimitHits { return s.limits.snapshot() }

// Downgraded returns how many confirmable notifications went out as NON
// because the client's NSTART queue was full.
func (s *ObserveServer) Downgraded() uint64 { return s.downgraded.Load() }

// Observers returns the number of observers of path.
func (s *ObserveServer) Observers(path string) int { return s.n.Observers(path) }

// endpointKey names a client endpoint as seen through one of our endpoints.
func endpointKey(ep *Endpoint, peer net.Addr) string {
	return fmt.Sprintf("%p|%s", ep, peer)
}

// Observable wraps h so a GET with Observe=0 registers the client (the
// response carries Observe with the registration's sequence number) and a
// GET with Observe=1 deregisters it (RFC 7641 §3.1, §3.6). An error
// response ends the registration at once (RFC 7641 §4.1). Requests without
// Observe, and follow-up Block2 requests, reach h unchanged.
func (s *ObserveServer) Observable(h Handler) Handler { return s.observable("", h) }

// ObservableAt is Observable for a resource named key rather than by the
// request's path: a proxy names the resource it serves by its target,
// which the request gives in Proxy-Uri or a path of its own (RFC 7641
// §5). Notify and NotifyState take the same key.
func (s *ObserveServer) ObservableAt(key string, h Handler) Handler { return s.observable(key, h) }

// observable serves Observable (path "": the request's path) and
// ObservableAt.
func (s *ObserveServer) observable(path string, h Handler) Handler {
	return HandlerFunc(func(w ResponseWriter, r *Request) {
		if r.Method != message.GET && r.Method != message.FETCH {
			h.ServeCOAP(w, r)
			return
		}
		v, ok := r.Options.Observe()
		ep := r.Endpoint()
		if !ok || ep == nil || r.Peer == nil {
			h.ServeCOAP(w, r)
			return
		}
		key := endpointKey(ep, r.Peer)
		if v == observe.Deregister {
			s.n.Deregister(key, r.Token)
			h.ServeCOAP(w, r)
			return
		}
		szx := s.szx
		if b2, has, err := requestBlock2(r); err == nil && has {
			if b2.Num > 0 {
				h.ServeCOAP(w, r) // a later block of a notification's body
				return
			}
			szx = min(szx, b2.SZX)
		}
		if v != observe.Register {
			h.ServeCOAP(w, r)
			return
		}
		if r.unverified() {
			// Notifications would go on without further requests: the
			// source proves its address first (RFC 9175 §2.4).
			challenge(w, r)
			return
		}
		rpath := path
		if rpath == "" {
			rpath = r.Path()
		}
		s.register(w, r, h, rpath, key, szx)
	})
}

// register adds the observer of path, runs h and adds Observe to a
// success response.
func (s *ObserveServer) register(w ResponseWriter, r *Request, h Handler, path, key string, szx uint8) {
	id := obsID{key, string(r.Token)}
	s.watchResets(r.Endpoint())
	src := sourceOf(r.Peer)
	s.mu.Lock()
	if _, again := s.targets[id]; !again {
		// A re-registration replaces its observer; a new one takes a
		// unit of the source's and the total quota.
		if v := s.quota.acquire(src); v != quotaOK {
			s.mu.Unlock()
			l := LimitObservers
			if v == quotaPerSource {
				l = LimitObserversPerSource
			}
			s.limits.hit(s.log, l, r.Peer, "path", path)
			// RFC 7641 §4.1: answered without Observe.
			h.ServeCOAP(w, r)
			return
		}
	}
	t := obsTarget{ep: r.Endpoint(), addr: r.Peer, szx: szx}
	if echo, ok := r.Options.Echo(); ok && len(echo) > 0 {
		t.answer = echoAnswer{key, path, string(echo)}
	}
	s.forgetAnswerLocked(id)
	s.targets[id] = t
	// The observer an earlier answer to the same challenge registered
	// with another token, removed once this one is in place.
	var earlier obsID
	if t.answer != (echoAnswer{}) {
		if prev, ok := s.answers[t.answer]; ok && prev != id {
			earlier = prev
		}
		s.answers[t.answer] = id
	}
	route := s.paths[path]
	if route == nil {
		route = &obsRoute{h: h}
		s.paths[path] = route
	}
	route.h = h
	route.req = *r
	s.mu.Unlock()
	reg, err := s.n.Register(path, key, r.Token)
	if err != nil {
		// RFC 7641 §4.1: a server unable to add the observer answers
		// without Observe; the client falls back to polling.
		s.mu.Lock()
		if t, ok := s.targets[id]; ok {
			s.forgetAnswerLocked(id)
			delete(s.targets, id)
			s.quota.release(sourceOf(t.addr))
		}
		s.mu.Unlock()
		s.log.Debug("coap observe registration refused", "path", path, "err", err)
		h.ServeCOAP(w, r)
		return
	}
	cw := codeWriter{ResponseWriter: w}
	h.ServeCOAP(&cw, r)
	if cw.code != 0 && !cw.code.IsSuccess() {
		s.n.Deregister(key, r.Token)
		return
	}
	*w.Options() = w.Options().SetUint(message.Observe, reg.Seq)
	if t.answer == (echoAnswer{}) {
		return
	}
	s.mu.Lock()
	later := s.answers[t.answer]
	s.mu.Unlock()
	if later != id && later != (obsID{}) {
		// A later answer to the same challenge came in meanwhile and may
		// have looked for this observer before it was registered.
		s.n.Deregister(key, r.Token)
	}
	if earlier != (obsID{}) {
		s.log.Debug("coap observe challenge answered again", "path", path, "peer", key)
		s.n.Deregister(earlier.endpoint, []byte(earlier.token))
	}
}

// forgetAnswerLocked removes from answers the entry of id's current
// target, if it is id's.
func (s *ObserveServer) forgetAnswerLocked(id obsID) {
	t, ok := s.targets[id]
	if ok && t.answer != (echoAnswer{}) && s.answers[t.answer] == id {
		delete(s.answers, t.answer)
	}
}

// codeWriter remembers the code a handler set.
type codeWriter struct {
	ResponseWriter
	code message.Code
}

func (w *codeWriter) SetCode(c message.Code) {
	w.code = c
	w.ResponseWriter.SetCode(c)
}

// deregistered forgets where a removed observer's notifications went.
func (s *ObserveServer) deregistered(o observe.Observer, reason error) {
	s.mu.Lock()
	con := s.cons[obsID{o.Endpoint, o.Token}]
	delete(s.cons, obsID{o.Endpoint, o.Token})
	if !errors.Is(reason, observe.ErrReplaced) {
		// A replacement has the same endpoint and token: its target stays.
		id := obsID{o.Endpoint, o.Token}
		if t, ok := s.targets[id]; ok {
			s.forgetAnswerLocked(id)
			delete(s.targets, id)
			s.quota.release(sourceOf(t.addr))
		}
	}
	if s.n.Observers(o.Path) == 0 {
		delete(s.paths, o.Path)
	}
	s.mu.Unlock()
	if con != nil {
		// A CON notification still queued behind NSTART or being
		// retransmitted to a removed observer (an unreachable client's
		// other registrations, say) is not sent on.
		con.cancel()
	}
	s.log.Debug("coap observer removed", "path", o.Path, "peer", o.Endpoint, "reason", reason)
	if s.opts.OnDeregister != nil {
		s.opts.OnDeregister(o, reason)
	}
}

// Notify re-runs the observable handler of path (with the latest
// registration request, without Observe) and sends the result to every
// observer of path. It returns the number of observers. Query parameters and
// Accept of individual registrations are not told apart: all observers of a
// path get the same representation.
func (s *ObserveServer) Notify(path string) int {
	st, ok := s.current(path)
	if !ok {
		return 0
	}
	return s.n.Notify(path, st)
}

// current runs the observable handler of path (with the latest
// registration request, without Observe) for the resource's state; ok is
// false when path has no handler.
func (s *ObserveServer) current(path string) (st observe.State, ok bool) {
	s.mu.Lock()
	route := s.paths[path]
	var req Request
	var h Handler
	if route != nil {
		req, h = route.req, route.h
	}
	s.mu.Unlock()
	if h == nil {
		return st, false
	}
	req.Options = req.Options.Clone().Del(message.Observe).Del(message.Block2)
	var w responseWriter
	h.ServeCOAP(&w, &req)
	st = observe.State{Code: w.code, Payload: w.payload}
	if cf, ok := w.opts.ContentFormat(); ok {
		st.ContentFormat = uint16(cf)
	} else {
		st.NoContentFormat = true
	}
	if w.opts.Has(message.MaxAge) {
		st.MaxAge = w.opts.MaxAge()
	}
	return st, true
}

// NotifyState sends st to every observer of path without running a handler.
func (s *ObserveServer) NotifyState(path string, st observe.State) int {
	return s.n.Notify(path, st)
}

// notifySender turns notifier Notifications into CoAP responses sent through
// the endpoint each observer registered on.
type notifySender struct{ s *ObserveServer }

// Send transmits n and waits for its outcome.
func (ns notifySender) Send(ctx context.Context, n observe.Notification) error {
	ch := make(chan error, 1)
	ns.SendAsync(ctx, n, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SendAsync starts transmitting n; done gets nil for a NON once written or an
// acknowledged CON, an error wrapping observe.ErrReset or observe.ErrTimeout
// when the client rejected or never acknowledged a CON (RFC 7641 §3.6, §4.5),
// observe.ErrUnreachable when its port reported unreachable meanwhile.
func (ns notifySender) SendAsync(_ context.Context, n observe.Notification, done func(error)) {
	s := ns.s
	s.mu.Lock()
	t, ok := s.targets[obsID{n.Endpoint, n.Token}]
	s.mu.Unlock()
	if !ok {
		done(nil) // deregistered meanwhile
		return
	}
	m := s.notification(&n, t.szx)
	if !n.Confirmable {
		s.sendNON(t, n.Observer, m, done)
		return
	}
	id := obsID{n.Endpoint, n.Token}
	og, err := t.ep.sendNotification(t.addr, m, func(o Outcome, _ *message.Message) {
		switch o {
		case Acknowledged:
			done(nil)
		case ResetByPeer:
			done(fmt.Errorf("%w: %w", observe.ErrReset, ErrReset))
		case TimedOut:
			done(fmt.Errorf("%w: %w", observe.ErrTimeout, ErrTimeout))
		case Unreachable:
			done(fmt.Errorf("%w: %w", observe.ErrUnreachable, ErrUnreachable))
		default:
			done(o.Err())
		}
	})
	if og != nil {
		s.mu.Lock()
		if _, ok := s.targets[id]; ok {
			s.cons[id] = og // finished already or not: cancel is idempotent
		}
		s.mu.Unlock()
	}
	if errors.Is(err, ErrClosed) {
		// The endpoint the client registered on is gone (server shutdown,
		// closed DTLS listener): so is the registration.
		done(err)
		s.n.Deregister(n.Endpoint, []byte(n.Token))
		return
	}
	if errors.Is(err, ErrTooManyPeers) {
		// No room for the client in the peer table: the notifier tries
		// again at its next tick, not at every change of the resource.
		done(fmt.Errorf("%w: %w", observe.ErrDeferred, err))
		return
	}
	if errors.Is(err, ErrPeerBusy) {
		// RFC 7641 §4.5.1 keeps confirmable traffic to a client within
		// NSTART; when its queue is full the latest state still goes out,
		// as NON, and a later notification carries the liveness check.
		s.downgraded.Add(1)
		m.Type = message.NonConfirmable
		s.sendNON(t, n.Observer, m, done)
		return
	}
	if err != nil {
		done(err)
	}
}

// notification builds the response message for n (RFC 7641 §4.2): the
// registration's token, Observe (success codes only), Content-Format and
// Max-Age; a body above the block size goes out as block 0 with Block2,
// Size2 and ETag (RFC 7959 §2.6).
func (s *ObserveServer) notification(n *observe.Notification, szx uint8) *message.Message {
	code := n.Code
	if code == 0 {
		code = message.Content
	}
	m := &message.Message{Type: message.NonConfirmable, Code: code, Token: []byte(n.Token), Payload: n.Payload}
	if n.Confirmable {
		m.Type = message.Confirmable
	}
	if code.IsSuccess() {
		m.Options = m.Options.SetUint(message.Observe, n.Seq)
		if !n.NoContentFormat {
			m.Options = m.Options.SetContentFormat(message.MediaType(n.ContentFormat))
		}
	}
	maxAge := n.MaxAge
	if maxAge == 0 {
		maxAge = s.opts.MaxAge
	}
	if maxAge != 0 {
		m.Options = m.Options.SetUint(message.MaxAge, maxAge)
	}
	if len(n.Payload) > 1<<(szx+4) {
		if sl, err := block.SliceBody(n.Payload, block.Option{SZX: szx}, true, szx); err == nil {
			setBlock2(&m.Options, sl, n.Payload, false)
			m.Payload = sl.Payload
		}
	}
	return m
}

// sendNON sends a NON notification and remembers its message ID, so an RST
// answering it removes the observer. The ID is remembered before the write:
// a peer's RST can arrive before the write call returns.
func (s *ObserveServer) sendNON(t obsTarget, o observe.Observer, m *message.Message, done func(error)) {
	id := obsID{o.Endpoint, o.Token}
	err := t.ep.sendNoted(t.addr, m, func(mid uint16) { s.resets.remember(id, mid) })
	if errors.Is(err, ErrTooManyPeers) {
		done(fmt.Errorf("%w: %w", observe.ErrDeferred, err))
		return
	}
	done(err)
	if errors.Is(err, ErrClosed) {
		s.n.Deregister(o.Endpoint, []byte(o.Token)) // its endpoint is gone
	}
}
