package bridge

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/cache"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/observe"
	"github.com/coap-mqtt/bridge/rules"
)

// upstream is the proxy's own observation of a device resource, held for
// the clients observing it through the bridge (RFC 7641 §5): one per
// cache key, whatever the number of clients.
type upstream struct {
	rule   string // the proxy rule its first client came through
	cancel context.CancelFunc
	ready  chan struct{} // closed once the first notification is cached, or the registration failed
	once   sync.Once
	// primed: the first registration was answered. Its answer is what the
	// first clients are answered with, not a notification to them; the
	// answer to a later registration may be news to every client.
	primed atomic.Bool
}

// isReady closes ready.
func (u *upstream) isReady() { u.once.Do(func() { close(u.ready) }) }

// upstreamRetry bounds the pause before the proxy observes a resource
// again after its observation ended while clients still observe it.
const upstreamRetry = 30 * time.Second

// follow makes sure the resource pr names is observed upstream for its
// observers: by the bridge's own observation when an observe rule holds
// one, else by the proxy's, which it starts here and waits for until its
// registration is answered, so the client's first answer comes from it.
// It reports whether it started the observation.
func (p *proxy) follow(ctx context.Context, pr *proxyRequest) bool {
	key, ok := pr.key()
	if !ok || pr.target.Learned && !p.awake(pr.target.Name) {
		return false // a sleeping device is not woken; its cache entry answers
	}
	rc := p.runCtx()
	if rc == nil {
		return false
	}
	started := false
	p.mu.Lock()
	u := p.upstream[key]
	if u == nil && p.fed[key] == 0 {
		started = true
		uctx, cancel := context.WithCancel(rc)
		u = &upstream{rule: pr.rule.Name, cancel: cancel, ready: make(chan struct{})}
		p.upstream[key] = u
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.observeUpstream(uctx, key, pr, u)
		}()
	}
	p.mu.Unlock()
	if u == nil {
		return false
	}
	select {
	case <-u.ready:
	case <-ctx.Done():
	}
	return started
}

// observeUpstream observes the device resource of key until no client
// observes it any more (or the proxy stops): each notification refreshes
// the cache entry and goes to every observer. An observation that ends is
// made again with backoff while clients remain; a resource that is not
// observable is left to the clients' own re-registration (each then finds
// the cache entry stale and asks the device once).
func (p *proxy) observeUpstream(ctx context.Context, key cache.Key, pr *proxyRequest, u *upstream) {
	defer func() {
		p.mu.Lock()
		if p.upstream[key] == u {
			delete(p.upstream, key)
		}
		p.mu.Unlock()
		u.cancel()
		u.isReady()
	}()
	bo := backoff{min: time.Second, max: upstreamRetry}
	for ctx.Err() == nil {
		obs, err := p.register(ctx, key, pr, u)
		if err != nil {
			u.isReady()
		}
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, coapside.ErrNotObservable):
			p.log.Debug("proxy: resource not observable", "device", pr.target.Name, "path", pathString(pr.target.Path))
			return
		case err != nil:
			p.log.Debug("proxy: observation failed", "device", pr.target.Name, "path", pathString(pr.target.Path), "err", err)
			var code message.Code
			if errors.As(err, &code) && code.IsError() {
				// The device refused: so are the clients (RFC 7641 §3.2).
				p.obs.NotifyState(string(key), observe.State{Code: code})
				return
			}
		default:
			bo.reset()
			p.metrics.upstream.Inc()
			select {
			case <-ctx.Done():
				<-obs.Done() // it deregisters itself as ctx ends
				p.metrics.upstream.Dec()
				return
			case <-obs.Done():
				p.metrics.upstream.Dec()
			}
		}
		if p.obs.Observers(string(key)) == 0 || !sleep(ctx, bo.next()) {
			return
		}
	}
}

// register makes one observation of pr's resource whose notifications
// feed key.
func (p *proxy) register(ctx context.Context, key cache.Key, pr *proxyRequest, u *upstream) (*coapside.Observation, error) {
	req := p.deviceRequest(&proxyRequest{rule: pr.rule, target: pr.target, method: pr.method, opts: pr.opts, payload: pr.payload})
	c, err := p.devices.prepareTarget(ctx, pr.target, req)
	if err != nil {
		return nil, err
	}
	p.metrics.deviceRequests.WithLabelValues(pr.rule.Name).Inc()
	sent := time.Now()
	obs, err := c.ObserveRequest(ctx, req, func(n coapside.Notification) {
		p.deviceAnswered(pr.target.Name)
		p.notified(key, &n, u.primed.Swap(true))
		u.isReady()
	}, coapside.ObservationOptions{CancelContext: p.drain})
	if err != nil && ctx.Err() == nil {
		p.deviceFailed(pr.target.Name, err, sent)
	}
	return obs, err
}

// notified takes a notification of an observation feeding key: a 2.05
// refreshes the cache entry and, when tell, goes to the proxy's
// observers of key.
func (p *proxy) notified(key cache.Key, n *coapside.Notification, tell bool) {
	if n.Code != message.Content {
		return // the observation ends; observeUpstream decides what next
	}
	at := n.Received
	if at.IsZero() {
		at = time.Now()
	}
	e := cache.NewEntry(n.Code, n.Options, n.Payload, at)
	p.cache.Put(key, e)
	if !tell {
		return
	}
	st := observe.State{Code: n.Code, Payload: n.Payload, MaxAge: e.MaxAge}
	if e.ContentFormat >= 0 {
		st.ContentFormat = uint16(e.ContentFormat)
	} else {
		st.NoContentFormat = true
	}
	p.obs.NotifyState(string(key), st)
}

// observerLeft ends the upstream observation of a resource whose last
// client stopped observing it through the proxy.
func (p *proxy) observerLeft(o observe.Observer, _ error) {
	if p.obs.Observers(o.Path) > 0 {
		return
	}
	p.mu.Lock()
	u := p.upstream[cache.Key(o.Path)]
	p.mu.Unlock()
	if u != nil {
		u.cancel()
	}
}

// rulesRemoved ends the observations held for clients of proxy rules a
// reload removed: the clients hear 4.04 (RFC 7641 §3.2 ends their
// registration), and the device's observation is deregistered.
func (p *proxy) rulesRemoved(d rules.Diff) {
	gone := map[string]bool{}
	for _, r := range d.Rules.Removed {
		if r.Kind == rules.KindProxy {
			gone[r.Name] = true
		}
	}
	if len(gone) == 0 {
		return
	}
	var ended []cache.Key
	p.mu.Lock()
	for k, u := range p.upstream {
		if gone[u.rule] {
			u.cancel()
			ended = append(ended, k)
		}
	}
	p.mu.Unlock()
	for _, k := range ended {
		p.obs.NotifyState(string(k), observe.State{Code: message.NotFound})
	}
}

// caching reports whether a proxy rule of the running set caches.
func (p *proxy) caching() bool {
	set := p.set.Load()
	if set == nil {
		return false
	}
	for _, r := range set.Proxies {
		if r.Cache {
			return true
		}
	}
	return false
}

// feed is how the bridge's own observations of device resources (observe
// rules) keep the proxy's cache fresh: up counts an observation of
// device's path that started (+1) or ended (-1), so the proxy observes
// that resource no second time; notify passes each notification on.
type feed struct{ p *proxy }

// key is the cache key a plain GET of device's path has.
func (feed) key(device, path string) cache.Key {
	return cacheKey(message.GET, device, splitPath(path), nil, nil)
}

func (f feed) up(device, path string, delta int) {
	if f.p == nil {
		return
	}
	k := f.key(device, path)
	f.p.mu.Lock()
	f.p.fed[k] += delta
	if f.p.fed[k] <= 0 {
		delete(f.p.fed, k)
	}
	f.p.mu.Unlock()
}

func (f feed) notify(device, path string, n *coapside.Notification) {
	if f.p == nil || !f.p.caching() {
		return // no copy of every notification while no proxy rule caches
	}
	f.p.notified(f.key(device, path), n, true)
}
