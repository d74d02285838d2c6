package bridge

import (
	"errors"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// routeHandler is the bridge's CoAP server handler: it routes requests by the
// running rule set's ingress and resource paths.
type routeHandler struct{ b *Bridge }

// ServeCOAP implements coapside.Handler.
func (h routeHandler) ServeCOAP(w coapside.ResponseWriter, r *coapside.Request) {
	b := h.b
	received := time.Now()
	set := b.set.Load()
	if set == nil {
		w.SetCode(message.ServiceUnavailable)
		return
	}
	if !r.Method.IsRequest() {
		w.SetCode(message.MethodNotAllowed)
		return
	}
	segs := r.Options.Strings(message.URIPath)
	if isWellKnownCore(segs) {
		identity, _ := r.PeerIdentity()
		b.serveWellKnownCore(w, r, set, identity)
		return
	}
	route, caps, err := set.MatchPath(r.Method, segs, nil)
	switch {
	case errors.Is(err, rules.ErrMethodNotAllowed):
		b.metrics.errors.WithLabelValues("", reasonMethod).Inc()
		w.SetCode(message.MethodNotAllowed)
		return
	case errors.Is(err, rules.ErrEscape):
		// A captured segment that would change the topic's levels.
		b.metrics.errors.WithLabelValues("", reasonEscape).Inc()
		b.log.Warn("request refused: path segment", "peer", r.Peer.String(), "path", r.Path(), "err", err)
		w.SetCode(message.BadRequest)
		w.SetContentFormat(message.TextPlain)
		w.Write([]byte(err.Error()))
		return
	case err != nil:
		b.metrics.errors.WithLabelValues("", reasonNoRoute).Inc()
		w.SetCode(message.NotFound)
		return
	}
	identity, _ := r.PeerIdentity()
	var idErr error
	if route.Ingress != nil {
		idErr = route.Ingress.CheckIdentity(caps, identity)
	} else {
		idErr = route.Resource.CheckIdentity(caps, identity)
	}
	if idErr != nil {
		b.metrics.errors.WithLabelValues(route.Name(), reasonIdentity).Inc()
		b.log.Warn("request refused: identity", "rule", route.Name(), "peer", r.Peer.String(), "err", idErr)
		if identity == "" {
			w.SetCode(message.Unauthorized) // RFC 7252 §5.9.2.2
		} else {
			w.SetCode(message.Forbidden)
		}
		return
	}
	if route.Ingress != nil {
		b.serveIngress(w, r, route.Ingress, caps, identity, received)
		return
	}
	rule := route.Resource
	b.obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		b.serveResource(w, r, rule, caps)
	})).ServeCOAP(w, r)
}

// serveIngress publishes a device's push. The device hears 2.04 Changed
// once the message is certain to be published, and 5.03 with Max-Age only
// for a message that is not and never will be (see publishOutput), so its
// retry cannot make a duplicate. A slow answer goes out as a separate
// response after an empty ACK (coapside's SeparateAfter).
func (b *Bridge) serveIngress(w coapside.ResponseWriter, r *coapside.Request, rule *rules.Ingress, caps rules.Captures, identity string, received time.Time) {
	in := &inbound{
		Payload:       r.Payload,
		ContentFormat: -1,
		Path:          r.Path(),
		Identity:      identity,
		Received:      received,
		Confirm:       true,
	}
	if cf, ok := r.Options.ContentFormat(); ok {
		in.ContentFormat = int(cf)
	}
	if d, ok := caps.Get("device"); ok {
		in.Device = d
	}
	err := b.publishOutput(r.Context(), rule.Name, &rule.Output, caps, in)
	switch {
	case err == nil, errors.Is(err, errFiltered):
		w.SetCode(message.Changed)
		if in.Device != "" {
			b.deviceSeen(in.Device)
		}
	default:
		if errors.Is(err, message.ServiceUnavailable) {
			o := w.Options()
			*o = o.SetUint(message.MaxAge, b.opts.RetryMaxAge)
		}
		// The outcome's code (5.00 for anything else) with a diagnostic
		// payload (RFC 7252 §5.5.2) that tells the device why.
		coapside.Error(w, err)
	}
}
