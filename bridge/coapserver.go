package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// ingress is the bridge's CoAP server. It routes requests by the running
// rule set's paths: a device's push to an ingress rule is published to
// MQTT, a GET on a resource rule's path or /.well-known/core is answered
// by resources.
type ingress struct {
	set     *atomic.Pointer[rules.Set]
	out     *outputs
	res     *resources
	proxy   *proxy              // proxy rules; forward-proxy requests
	seen    func(device string) // a device pushed: its waiting commands go out
	learned *learnedDevices     // where devices speak from; nil: not recorded
	// heardListed, when set, is told of a request naming a [[device]]
	// with a url, which is not learned (see learn).
	heardListed func(device string)
	metrics     *metrics
	log         *slog.Logger
	retryMaxAge uint32 // Max-Age sent with 5.03 (Options.RetryMaxAge)
	srv         *coapside.Server

	mu        sync.Mutex
	listeners []listener // added before Run
	serving   bool       // Run has handed the listeners to the server
	closed    bool
	wg        sync.WaitGroup // one per listener being served
}

// listener is one socket of the CoAP server.
type listener struct {
	scheme string // "coap" or "coaps", the prefix of its errors
	conn   net.PacketConn
}

// ingressIdleReaders is how many idle read goroutines the CoAP server
// keeps per socket. Its handlers run on the readers and publish inline,
// yielding to the broker's writers, so under load many readers are busy
// at once and the rest go idle together; with coapside's default of two,
// readers were started and retired hundreds of times a second, each new
// one growing its stack again through the publish path (about 7 % less CPU
// per message end to end with eight).
const ingressIdleReaders = 8

func newIngress(set *atomic.Pointer[rules.Set], out *outputs, res *resources, seen func(string), m *metrics, log *slog.Logger, opts Options) *ingress {
	in := &ingress{set: set, out: out, res: res, seen: seen, metrics: m, log: log, retryMaxAge: opts.RetryMaxAge}
	// Forward-proxy requests reach ServeCOAP, which forwards what a proxy
	// rule allows and answers 5.05 for the rest (RFC 7252 §5.7.2).
	in.srv = &coapside.Server{Handler: in, Options: coapside.ServerOptions{EndpointOptions: opts.CoAP, Proxy: true, IdleReaders: ingressIdleReaders}}
	in.srv.Options.Logger = log
	return in
}

// rateLimit applies coap.rate_limit, coap.rate_burst and coap.rate_block
// to every listener of the server (per source address; DTLS peers
// included, though only the UDP listener blocks in the kernel).
func (in *ingress) rateLimit(c CoAPConfig) {
	in.srv.Options.RateLimit = c.RateLimit
	in.srv.Options.RateBurst = c.RateBurst
	in.srv.Options.RateBlock = c.RateBlock
}

// limits applies coap.limits to the server: Block1 uploads (per source, in
// total, their idle timeout and a reassembled size of at most maxBody, the
// MQTT payload limit), the messages queued per client and the requests of
// one source handled at once.
func (in *ingress) limits(c CoAPConfig, maxBody int) {
	l := c.Limits.withDefaults()
	in.srv.Options.Blockwise.MaxBodySize = maxBody
	in.srv.Options.Blockwise.MaxTransfers = l.Block1Transfers
	in.srv.Options.Blockwise.MaxTransfersPerSource = l.Block1TransfersPerSource
	in.srv.Options.Blockwise.Lifetime = l.Block1Timeout
	in.srv.Options.MaxQueuePerPeer = l.PendingPerPeer
	in.srv.Options.MaxConcurrentPerSource = l.HandlersPerSource
}

// add gives the server a socket to serve once Run is called; Shutdown
// closes it if Run never is.
func (in *ingress) add(scheme string, conn net.PacketConn) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		_ = conn.Close()
		return
	}
	in.listeners = append(in.listeners, listener{scheme, conn})
}

// Run serves the sockets given with add until Shutdown. It returns the
// first error that stops a socket being served, or nil once shut down.
func (in *ingress) Run(context.Context) error {
	in.mu.Lock()
	if in.closed || in.serving {
		in.mu.Unlock()
		return nil
	}
	in.serving = true
	ls := in.listeners
	in.wg.Add(len(ls))
	in.mu.Unlock()
	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() {
			defer in.wg.Done()
			errc <- in.serve(l)
		}()
	}
	for range ls {
		if err := <-errc; err != nil {
			return err
		}
	}
	return nil
}

// serve serves one socket; the server's own end after Shutdown
// (ErrServerClosed) is not an error.
func (in *ingress) serve(l listener) error {
	err := in.srv.Serve(l.conn)
	if err == nil || errors.Is(err, coapside.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s: %w", l.scheme, err)
}

// Shutdown stops taking requests (new ones get 5.03) and gives those in
// progress drainRequests (within ctx) to finish: then their context ends,
// so what they had not published is withdrawn. It returns once every
// socket is closed and no handler runs.
func (in *ingress) Shutdown(ctx context.Context) error {
	in.mu.Lock()
	in.closed = true
	serving := in.serving
	ls := in.listeners
	in.mu.Unlock()
	if !serving {
		for _, l := range ls {
			_ = l.conn.Close()
		}
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, drainRequests)
	defer cancel()
	err := in.srv.Shutdown(cctx)
	in.wg.Wait() // Serve returns once its endpoint, handlers included, is done
	return err
}

// drain stops taking requests (new ones get 5.03) and gives those in
// progress drainRequests (within ctx) to finish, leaving the sockets
// open: what the bridge sent from them (observations and commands of
// learned devices) still gets its answers, such as those to the
// deregistrations of a shutdown. Shutdown closes them.
func (in *ingress) drain(ctx context.Context) error {
	in.mu.Lock()
	serving := in.serving
	in.mu.Unlock()
	if !serving {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, drainRequests)
	defer cancel()
	return in.srv.Drain(cctx)
}

// live reports a listener that has stopped reading its socket.
func (in *ingress) live() error { return in.srv.Health() }

// ServeCOAP implements coapside.Handler.
func (in *ingress) ServeCOAP(w coapside.ResponseWriter, r *coapside.Request) {
	received := time.Now()
	set := in.set.Load()
	if set == nil {
		w.SetCode(message.ServiceUnavailable)
		return
	}
	if !r.Method.IsRequest() {
		w.SetCode(message.MethodNotAllowed)
		return
	}
	if r.Options.Has(message.ProxyURI) || r.Options.Has(message.ProxyScheme) {
		in.proxy.serveForward(w, r, set)
		return
	}
	segs := r.Options.Strings(message.URIPath)
	identity, _ := r.PeerIdentity()
	d := decideCoAP(set, r.Method, segs, identity)
	switch d.action {
	case actDiscovery:
		in.res.serveWellKnownCore(w, r, set, identity)
		return
	case actRefuse:
		in.refuse(w, r, d)
		return
	case actProxy:
		in.proxy.serveReverse(w, r, set, d.route.Proxy, d.caps)
		return
	}
	if dev, ok := d.caps.Get("device"); ok {
		in.learn(r, set, dev, identity, received)
	}
	if d.action == actIngress {
		in.serveIngress(w, r, d.route.Ingress, d.caps, identity, received)
		return
	}
	in.res.serve(w, r, d.route.Resource, bindIdentity(d.caps, identity))
}

// refuse answers a request the rules do not take, counts it and logs
// what an operator needs to know.
func (in *ingress) refuse(w coapside.ResponseWriter, r *coapside.Request, d coapDecision) {
	if d.reason != "" {
		rule := ""
		if d.route != nil {
			rule = d.route.Name()
		}
		dev, _ := d.caps.Get("device")
		in.metrics.ruleError(rule, d.reason, errorDetail{device: dev, code: d.code, err: d.err})
	}
	switch d.reason {
	case reasonEscape:
		in.log.Warn("request refused: path segment", "peer", r.Peer.String(), "path", r.Path(), "err", d.err)
	case reasonIdentity:
		in.log.Warn("request refused: identity", "rule", d.route.Name(), "peer", r.Peer.String(), "err", d.err)
	}
	w.SetCode(d.code)
	if d.reason == reasonEscape {
		w.SetContentFormat(message.TextPlain)
		w.Write([]byte(d.err.Error()))
	}
}

// learn records where device dev spoke from: its request passed the
// rule's identity check, so a request refused there never moves a device.
// A [[device]] with a url is reached, shown and announced at its url: a
// request naming it (its own push, or a CoAP client reading its resource
// rule from anywhere) records no address and is only a sign of life.
func (in *ingress) learn(r *coapside.Request, set *rules.Set, dev, identity string, at time.Time) {
	if in.learned == nil {
		return
	}
	if d, ok := set.Device(dev); ok && d.Host != "" {
		if in.heardListed != nil {
			in.heardListed(dev)
		}
		return
	}
	addr, ok := addrPort(r.Peer)
	if !ok {
		return
	}
	via := ViaUDP
	if _, secure := r.Conn().(coapside.PeerIdentityProvider); secure {
		via = ViaDTLS
	}
	in.learned.learn(dev, addr, r.Endpoint(), via, identity != "" && identity == dev, at)
}

// serveIngress publishes a device's push. The device hears 2.04 Changed
// once the message is certain to be published, and 5.03 with Max-Age only
// for a message that is not and never will be (see publishOutput), so its
// retry cannot make a duplicate. A slow answer goes out as a separate
// response after an empty ACK (coapside's SeparateAfter).
func (in *ingress) serveIngress(w coapside.ResponseWriter, r *coapside.Request, rule *rules.Ingress, caps rules.Captures, identity string, received time.Time) {
	if r.Options.Has(message.IfMatch) {
		// RFC 7252 §5.10.8.1: a push target has no current
		// representation, so no If-Match condition holds and the push
		// is not made. If-None-Match always holds.
		err := fmt.Errorf("%w: If-Match: a push target has no current representation", message.PreconditionFailed)
		dev, _ := caps.Get("device")
		in.metrics.ruleError(rule.Name, reasonPrecondition, errorDetail{device: dev, code: message.PreconditionFailed, err: err})
		coapside.Error(w, err)
		return
	}
	cf := -1
	if f, ok := r.Options.ContentFormat(); ok {
		cf = int(f)
	}
	msg := pushInbound(r.Payload, cf, r.Path(), identity, caps, received)
	err := in.out.publish(r.Context(), rule.Name, &rule.Output, caps, msg)
	switch {
	case err == nil, errors.Is(err, errFiltered):
		w.SetCode(message.Changed)
		if msg.Device != "" {
			in.seen(msg.Device)
		}
	default:
		if errors.Is(err, message.ServiceUnavailable) {
			o := w.Options()
			*o = o.SetUint(message.MaxAge, in.retryMaxAge)
		}
		// The outcome's code (5.00 for anything else) with a diagnostic
		// payload (RFC 7252 §5.5.2) that tells the device why.
		coapside.Error(w, err)
	}
}
