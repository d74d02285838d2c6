package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/cache"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// proxy runs [[proxy]] rules: CoAP clients reach devices through the
// bridge's CoAP server (a reverse proxy on a rule's path, or a
// forward-proxy request, RFC 7252 §5.7) and HTTP clients through
// /coap/ (RFC 8075), all through one response cache (RFC 7252 §5.6).
// A fresh cached response is answered without asking the device; the
// notifications of the bridge's own observations of a device resource
// keep its entry fresh; many clients observing one resource through the
// bridge cost the device one observation (RFC 7641 §5); a sleeping
// learned device is never woken: it is answered from the cache, or
// refused.
type proxy struct {
	set     *atomic.Pointer[rules.Set]
	devices *deviceClients
	// awake reports whether a learned device listens now (queue mode,
	// see deviceQueue): outside its awake window it is asleep.
	awake func(name string) bool
	// answered and failed, when set, hear how a device answered a
	// request of the proxy (its presence: see presence.answered and
	// presence.unreachable).
	answered func(name string)
	failed   func(name string, err error, sent time.Time)
	cache    *cache.Cache
	obs      *coapside.ObserveServer
	metrics  *proxyMetrics
	log      *slog.Logger
	// retryMaxAge is the Max-Age of a 5.03 for a sleeping device.
	retryMaxAge uint32
	run         runState
	// drain ends when the upstream observations must stop waiting for
	// the answers to their deregistrations: at Shutdown's share for it.
	drain    context.Context
	endDrain context.CancelFunc

	mu       sync.Mutex
	ctx      context.Context // Run's; nil before Run
	wg       sync.WaitGroup  // upstream observations and shared exchanges
	flights  map[cache.Key]*flight
	upstream map[cache.Key]*upstream
	fed      map[cache.Key]int // the bridge's own observations feeding an entry
}

// proxyRequest is a request on its way through a proxy rule to a device.
type proxyRequest struct {
	rule   *rules.Proxy
	target rules.Target
	method message.Code
	// opts are the request options forwarded to the device besides the
	// target's Uri-Host, Uri-Port and Uri-Path (see forwardedOptions).
	opts    message.Options
	payload []byte
	// etags are the ETags the client holds (RFC 7252 §5.10.6.2).
	etags [][]byte
	// registered: the client's Observe registration made the proxy's
	// observation of the device, whose answer the cache now holds: the
	// device answered this request.
	registered bool
}

// proxyResponse is what the client is answered.
type proxyResponse struct {
	code message.Code
	// opts are Content-Format, Max-Age, ETag and Location-* (see
	// relayedOptions).
	opts    message.Options
	payload []byte
	// cached: answered from the cache, the device was not asked; stale:
	// past its Max-Age (which opts then sets to 0).
	cached, stale bool
}

// Errors of the proxy, each answered with its code.
var (
	errProxyAsleep  = fmt.Errorf("device asleep: it is reached after its next uplink (%w)", message.ServiceUnavailable)
	errProxyUnknown = fmt.Errorf("not a device the bridge knows (%w)", message.Forbidden)
)

func newProxy(set *atomic.Pointer[rules.Set], devices *deviceClients, awake func(string) bool, c *cache.Cache, m *proxyMetrics, log *slog.Logger, opts Options, lim LimitsConfig) (*proxy, error) {
	p := &proxy{
		set: set, devices: devices, awake: awake, cache: c, metrics: m, log: log,
		retryMaxAge: opts.RetryMaxAge,
		flights:     map[cache.Key]*flight{},
		upstream:    map[cache.Key]*upstream{},
		fed:         map[cache.Key]int{},
	}
	p.drain, p.endDrain = context.WithCancel(context.Background())
	lim = lim.withDefaults()
	obs, err := coapside.NewObserveServer(coapside.ObserveOptions{
		Logger: log, MaxObservers: lim.Observers, MaxObserversPerSource: lim.ObserversPerSource,
		CheckInterval: lim.ObserveCheck,
		OnDeregister:  p.observerLeft,
	})
	if err != nil {
		return nil, err
	}
	p.obs = obs
	return p, nil
}

// Run sends the notifications to the proxy's observers until Shutdown.
func (p *proxy) Run(ctx context.Context) error {
	ctx, ok := p.run.begin(ctx)
	if !ok {
		return nil
	}
	defer p.run.end()
	p.mu.Lock()
	p.ctx = ctx
	p.mu.Unlock()
	_ = p.obs.Run(ctx) // returns ctx's error when it ends
	p.wg.Wait()        // upstream observations deregister as ctx ends
	return nil
}

// Shutdown ends the upstream observations and stops notifying. Their
// deregistrations wait for no device past half of the time ctx has left.
func (p *proxy) Shutdown(ctx context.Context) error {
	defer p.endDrain()
	dctx, cancel := halfOf(ctx)
	defer cancel()
	defer context.AfterFunc(dctx, p.endDrain)()
	return p.run.stop(ctx)
}

// runCtx is Run's context, or nil when the proxy does not run.
func (p *proxy) runCtx() context.Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx == nil || p.ctx.Err() != nil {
		return nil
	}
	return p.ctx
}

// cacheKey is the cache key of a request: the device by name (whatever
// address or scheme reached it), its resource and the options that
// select a representation.
func cacheKey(method message.Code, device string, path []string, opts message.Options, payload []byte) cache.Key {
	o := make(message.Options, 0, len(path)+len(opts))
	for _, s := range path {
		o = o.AddString(message.URIPath, s)
	}
	for _, x := range opts {
		o = o.Add(x.ID, x.Value)
	}
	return cache.KeyOf(method, device, o, payload)
}

// key is the request's cache key; ok is false for a request that is not
// cached (an unsafe method, or a rule with cache = false).
func (pr *proxyRequest) key() (cache.Key, bool) {
	if !pr.rule.Cache || pr.method != message.GET && pr.method != message.FETCH {
		return "", false
	}
	return cacheKey(pr.method, pr.target.Name, pr.target.Path, pr.opts, pr.payload), true
}

// forwardedOptions picks the request options a proxy forwards to the
// device (RFC 7252 §5.7.2): the content negotiation, the conditions and
// the query. Uri-Host, Uri-Port and Uri-Path come from the rule's url;
// Observe and Block options are the proxy's own exchanges with either
// side; the rest does not concern the device.
func forwardedOptions(o message.Options) (fwd message.Options, etags [][]byte) {
	for _, x := range o {
		switch x.ID {
		case message.ETag:
			etags = append(etags, x.Value)
		case message.IfMatch, message.IfNoneMatch, message.ContentFormat, message.Accept, message.URIQuery:
			fwd = append(fwd, x)
		}
	}
	return fwd, etags
}

// relayedOptions picks the response options a proxy passes back to its
// client: the representation's format, freshness and validator, and
// where a created resource is.
func relayedOptions(o message.Options) message.Options {
	var out message.Options
	for _, x := range o {
		switch x.ID {
		case message.ContentFormat, message.MaxAge, message.ETag, message.LocationPath, message.LocationQuery:
			out = append(out, x)
		}
	}
	return out
}

// exchange answers pr: from the cache while fresh, else from the device
// (one request however many clients ask at once), revalidating a stale
// entry with its ETag; a sleeping device is never asked.
func (p *proxy) exchange(ctx context.Context, pr *proxyRequest) (*proxyResponse, error) {
	key, cacheable := pr.key()
	var held *cache.Entry
	if cacheable {
		e, fresh, ok := p.cache.Get(key)
		if ok && fresh {
			if pr.registered {
				p.metrics.result(pr.rule.Name, resultDevice)
			} else {
				p.metrics.result(pr.rule.Name, resultCached)
			}
			return fromEntry(e, pr.etags, time.Now()), nil
		}
		if ok {
			held = e
		}
	}
	if pr.target.Learned && !p.awake(pr.target.Name) {
		return p.unavailable(pr, held, errProxyAsleep)
	}
	if !cacheable {
		resp, err := p.ask(ctx, pr, nil)
		if err != nil {
			return p.unavailable(pr, nil, err)
		}
		if resp.code.IsSuccess() && pr.method != message.GET && pr.method != message.FETCH {
			// RFC 7252 §5.6: what a cache holds for the resource is
			// no longer fresh once it was changed.
			p.cache.Invalidate(pr.target.Name, pathString(pr.target.Path))
		}
		p.metrics.result(pr.rule.Name, resultDevice)
		return resp, nil
	}
	resp, err := p.shared(ctx, key, pr, held)
	if err != nil {
		return p.unavailable(pr, held, err)
	}
	if resp.cached {
		p.metrics.result(pr.rule.Name, resultRevalidated)
	} else {
		p.metrics.result(pr.rule.Name, resultDevice)
	}
	return withClientETags(resp, pr.etags), nil
}

// unavailable answers a request the device cannot answer now (asleep,
// unreachable, silent): with the held stale entry when the rule serves
// stale values, else with the error.
func (p *proxy) unavailable(pr *proxyRequest, held *cache.Entry, err error) (*proxyResponse, error) {
	if held != nil && pr.rule.Stale == rules.StaleServe {
		p.metrics.result(pr.rule.Name, resultStale)
		return fromEntry(held, pr.etags, time.Now()), nil
	}
	p.metrics.result(pr.rule.Name, resultRefused)
	return nil, err
}

// fromEntry answers from a cache entry: 2.03 Valid when the client holds
// its ETag (RFC 7252 §5.9.1.3), else the representation; Max-Age is the
// freshness left (0 for a stale entry, RFC 7252 §5.6.1).
func fromEntry(e *cache.Entry, etags [][]byte, now time.Time) *proxyResponse {
	left, fresh := e.Remaining(now)
	r := &proxyResponse{code: e.Code, cached: true, stale: !fresh}
	r.opts = append(r.opts, e.Options...)
	if e.ContentFormat >= 0 {
		r.opts = r.opts.SetContentFormat(message.MediaType(e.ContentFormat))
	}
	if e.ETag != nil {
		r.opts = r.opts.SetETag(e.ETag)
	}
	r.opts = r.opts.SetMaxAge(left)
	for _, t := range etags {
		if e.ETag != nil && bytes.Equal(t, e.ETag) {
			r.code = message.Valid
			return r
		}
	}
	r.payload = e.Payload
	return r
}

// withClientETags turns a 2.05 whose ETag the client holds into 2.03
// Valid without payload.
func withClientETags(r *proxyResponse, etags [][]byte) *proxyResponse {
	if r.code != message.Content || len(etags) == 0 {
		return r
	}
	tag, ok := r.opts.ETag()
	if !ok {
		return r
	}
	for _, t := range etags {
		if bytes.Equal(t, tag) {
			out := *r
			out.code, out.payload = message.Valid, nil
			return &out
		}
	}
	return r
}

// flight is one exchange with a device that concurrent requests for the
// same cache key share.
type flight struct {
	done chan struct{}
	resp *proxyResponse
	err  error
}

// shared asks the device once for every request of key in flight at the
// same time, and caches a 2.05 (or, for a 2.03 answering held's ETag,
// refreshes held). The exchange runs under the proxy's own context, so a
// client that gives up does not fail the others.
func (p *proxy) shared(ctx context.Context, key cache.Key, pr *proxyRequest, held *cache.Entry) (*proxyResponse, error) {
	p.mu.Lock()
	f, joined := p.flights[key]
	if !joined {
		f = &flight{done: make(chan struct{})}
		p.flights[key] = f
	}
	p.mu.Unlock()
	if !joined {
		p.fly(ctx, key, pr, held, f)
	}
	select {
	case <-f.done:
		return f.resp, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fly runs flight f; it returns once f is done.
func (p *proxy) fly(ctx context.Context, key cache.Key, pr *proxyRequest, held *cache.Entry, f *flight) {
	defer func() {
		p.mu.Lock()
		delete(p.flights, key)
		p.mu.Unlock()
		close(f.done)
	}()
	if rc := p.runCtx(); rc != nil {
		ctx = rc
	}
	resp, err := p.ask(ctx, pr, held)
	if err != nil {
		f.err = err
		return
	}
	switch {
	case resp.code == message.Valid && held != nil && validates(resp, held):
		e, ok := p.cache.Revalidated(key, resp.opts.MaxAge())
		if !ok {
			e = held
		}
		f.resp = fromEntry(e, nil, time.Now())
	case resp.code == message.Content:
		p.cache.Put(key, cache.NewEntry(resp.code, resp.opts, resp.payload, time.Now()))
		f.resp = resp
	default:
		f.resp = resp
	}
}

// validates reports whether a 2.03 names held's ETag (or none, which
// answers the one ETag sent).
func validates(resp *proxyResponse, held *cache.Entry) bool {
	tag, ok := resp.opts.ETag()
	return !ok || bytes.Equal(tag, held.ETag)
}

// ask sends pr to its device within the rule's timeout; held, a stale
// entry with an ETag, makes the request conditional (RFC 7252 §5.10.6.2).
func (p *proxy) ask(ctx context.Context, pr *proxyRequest, held *cache.Entry) (*proxyResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, pr.rule.Timeout)
	defer cancel()
	req := p.deviceRequest(pr)
	if held != nil && held.ETag != nil {
		req.Options = req.Options.Add(message.ETag, held.ETag)
	}
	p.metrics.deviceRequests.WithLabelValues(pr.rule.Name).Inc()
	start := time.Now()
	resp, err := p.devices.doTarget(ctx, pr.target, req)
	p.metrics.deviceSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		p.deviceFailed(pr.target.Name, err, start)
		return nil, err
	}
	p.deviceAnswered(pr.target.Name)
	return &proxyResponse{code: resp.Code, opts: relayedOptions(resp.Options), payload: resp.Payload}, nil
}

// deviceAnswered tells presence that the device answered.
func (p *proxy) deviceAnswered(name string) {
	if p.answered != nil && name != "" {
		p.answered(name)
	}
}

// deviceFailed tells presence that a request to the device, sent at
// sent, failed.
func (p *proxy) deviceFailed(name string, err error, sent time.Time) {
	if p.failed != nil && name != "" {
		p.failed(name, err, sent)
	}
}

// deviceRequest builds the request to the device: the target's options
// (Uri-Host, Uri-Port, Uri-Path) and the forwarded ones.
func (p *proxy) deviceRequest(pr *proxyRequest) *coapside.Request {
	opts := append(make(message.Options, 0, len(pr.target.Options)+len(pr.opts)+1), pr.target.Options...)
	for _, x := range pr.opts {
		opts = opts.Add(x.ID, x.Value)
	}
	req := &coapside.Request{Method: pr.method, Type: message.Confirmable, Options: opts, Payload: pr.payload}
	if !pr.target.Learned {
		req.URL = pr.target.URL()
	}
	return req
}

// pathString is a path as the cache indexes it.
func pathString(segs []string) string { return "/" + strings.Join(segs, "/") }

// proxyError maps an error of a proxied exchange to the code the client
// hears (RFC 7252 §5.9.3): a code carried by the error as it is, no
// answer in time 5.04 Gateway Timeout, anything else 5.02 Bad Gateway.
func proxyError(err error) message.Code {
	var c message.Code
	switch {
	case errors.As(err, &c) && c.IsError():
		return c
	case errors.Is(err, rules.ErrUnknownDevice):
		return message.Forbidden
	case errors.Is(err, coapside.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return message.GatewayTimeout
	}
	return message.BadGateway
}
