package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/coap-mqtt/bridge/bridge/httpcoap"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// httpProxyPrefix is where HTTP clients reach devices (RFC 8075):
// /coap/{device}/{path...}.
const httpProxyPrefix = "/coap/"

// mountHTTP serves the HTTP proxy on the bridge's HTTP server. Every
// request needs a proxy rule with http = true whose url takes its device
// and path; without one it is 403.
func (p *proxy) mountHTTP(mux *http.ServeMux) {
	mux.Handle(httpProxyPrefix, &httpcoap.Handler{Prefix: httpProxyPrefix, F: httpForwarder{p}, Log: p.log})
}

// httpForwarder runs HTTP requests through the proxy rules, the cache and
// the devices as the CoAP side does.
type httpForwarder struct{ p *proxy }

// Forward implements httpcoap.Forwarder.
func (f httpForwarder) Forward(ctx context.Context, req *httpcoap.Request) (*httpcoap.Response, error) {
	p := f.p
	set := p.set.Load()
	if set == nil {
		return nil, message.ServiceUnavailable
	}
	rule, caps, err := set.MatchProxy(rules.ViaHTTP, nil, req.Device, req.Path, req.Method)
	switch {
	case errors.Is(err, rules.ErrNoRoute):
		p.countFailure("", req.Device, message.Forbidden, reasonNoRoute, err)
		return nil, httpcoap.ErrNotAllowed
	case errors.Is(err, rules.ErrMethodNotAllowed):
		p.countFailure("", req.Device, message.MethodNotAllowed, reasonMethod, err)
		return nil, fmt.Errorf("%w: %v", message.MethodNotAllowed, err)
	case err != nil:
		p.countFailure("", req.Device, message.BadRequest, reasonEscape, err)
		return nil, fmt.Errorf("%w: %v", message.BadRequest, err)
	}
	t, err := set.ProxyTarget(rule, caps)
	if err == nil && t.Learned && !p.devices.knows(t.Name) {
		err = fmt.Errorf("%s: %w", t.Name, errProxyUnknown)
	}
	if err != nil {
		p.countFailure(rule.Name, req.Device, proxyError(err), proxyReason(err), err)
		return nil, httpcoap.ErrUnknownDevice
	}
	var opts message.Options
	if req.ContentFormat != nil {
		opts = opts.SetContentFormat(*req.ContentFormat)
	}
	for _, q := range req.Query {
		opts = opts.AddString(message.URIQuery, q)
	}
	if req.Accept != nil {
		opts = opts.SetAccept(*req.Accept)
	}
	pr := &proxyRequest{rule: rule, target: t, method: req.Method, opts: opts, payload: req.Payload, etags: req.ETags}
	resp, err := p.exchange(ctx, pr)
	if err != nil {
		code := proxyError(err)
		p.countFailure(rule.Name, t.Name, code, proxyReason(err), err)
		if code == message.ServiceUnavailable {
			// Retry-After from Max-Age (RFC 8075 §7).
			ma := p.retryMaxAge
			return &httpcoap.Response{Code: code, ContentFormat: int(message.TextPlain), Payload: []byte(err.Error()), MaxAge: &ma}, nil
		}
		return nil, fmt.Errorf("%w: %v", code, err)
	}
	out := &httpcoap.Response{Code: resp.code, ContentFormat: -1, Payload: resp.payload, Stale: resp.stale, Cached: resp.cached}
	if cf, ok := resp.opts.ContentFormat(); ok {
		out.ContentFormat = int(cf)
	}
	if resp.opts.Has(message.MaxAge) {
		ma := resp.opts.MaxAge()
		out.MaxAge = &ma
	}
	if tag, ok := resp.opts.ETag(); ok {
		out.ETag = tag
	}
	return out, nil
}
