package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
	"github.com/coap-mqtt/bridge/rules"
)

// serveReverse answers a request on a proxy rule's path: the device
// resource its url names with the path's captures.
func (p *proxy) serveReverse(w coapside.ResponseWriter, r *coapside.Request, set *rules.Set, rule *rules.Proxy, caps rules.Captures) {
	t, err := set.ProxyTarget(rule, caps)
	if err != nil {
		p.refuse(w, rule.Name, "", err)
		return
	}
	p.serveCoAP(w, r, rule, t)
}

// serveForward answers a forward-proxy request (RFC 7252 §5.7.2): its
// target, from Proxy-Uri or from Proxy-Scheme with Uri-Host, Uri-Port and
// Uri-Path, must be a device the bridge knows and a proxy rule with
// forward = true must take it; anything else is 5.05 Proxying Not
// Supported (no rule, another scheme) or 4.03 Forbidden (a host that is
// no known device).
func (p *proxy) serveForward(w coapside.ResponseWriter, r *coapside.Request, set *rules.Set) {
	ft, err := parseForward(r.Options)
	if err != nil {
		p.refuse(w, "", "", err)
		return
	}
	name, ok := p.deviceAt(set, ft)
	if !ok {
		p.refuse(w, "", "", fmt.Errorf("%s: %w", ft.host, errProxyUnknown))
		return
	}
	rule, caps, err := set.MatchProxy(rules.ViaForward, &ft.secure, name, ft.path, r.Method)
	switch {
	case errors.Is(err, rules.ErrNoRoute):
		p.refuse(w, "", name, fmt.Errorf("no proxy rule forwards to %s://%s%s (%w)", uri.SchemeName(ft.secure), name, pathString(ft.path), message.ProxyingNotSupported))
		return
	case errors.Is(err, rules.ErrMethodNotAllowed):
		p.refuse(w, "", name, fmt.Errorf("%s: %w", r.Method, message.MethodNotAllowed))
		return
	case err != nil:
		p.refuse(w, "", name, fmt.Errorf("%w (%w)", err, message.BadRequest))
		return
	}
	t, err := set.ProxyTarget(rule, caps)
	if err != nil {
		p.refuse(w, rule.Name, name, err)
		return
	}
	// The query of Proxy-Uri travels as Uri-Query options.
	opts := r.Options.Del(message.URIQuery)
	for _, q := range ft.query {
		opts = opts.AddString(message.URIQuery, q)
	}
	r.Options = opts
	p.serveCoAP(w, r, rule, t)
}

// serveCoAP runs a CoAP client's request through rule to target t; a GET
// with Observe registers the client with the proxy's observers of the
// resource (RFC 7641 §5).
func (p *proxy) serveCoAP(w coapside.ResponseWriter, r *coapside.Request, rule *rules.Proxy, t rules.Target) {
	if t.Learned && !p.devices.knows(t.Name) {
		p.refuse(w, rule.Name, t.Name, fmt.Errorf("%s: %w", t.Name, errProxyUnknown))
		return
	}
	fwd, etags := forwardedOptions(r.Options)
	pr := &proxyRequest{rule: rule, target: t, method: r.Method, opts: fwd, payload: r.Payload, etags: etags}
	handle := coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		if v, ok := r.Options.Observe(); ok && v == 0 {
			pr.registered = p.follow(r.Context(), pr)
		}
		p.answer(w, r.Context(), pr)
	})
	key, cacheable := pr.key()
	if _, observing := r.Options.Observe(); observing && cacheable {
		p.obs.ObservableAt(string(key), handle).ServeCOAP(w, r)
		return
	}
	p.answer(w, r.Context(), pr)
}

// answer writes pr's outcome.
func (p *proxy) answer(w coapside.ResponseWriter, ctx context.Context, pr *proxyRequest) {
	resp, err := p.exchange(ctx, pr)
	if err != nil {
		p.refuse(w, pr.rule.Name, pr.target.Name, err)
		return
	}
	w.SetCode(resp.code)
	o := w.Options()
	for _, x := range resp.opts {
		*o = o.Add(x.ID, x.Value)
	}
	if len(resp.payload) > 0 {
		_, _ = w.Write(resp.payload)
	}
}

// refuse answers err's code with a diagnostic payload (RFC 7252 §5.5.2),
// counted against rule ("" for a forward request no rule took).
func (p *proxy) refuse(w coapside.ResponseWriter, rule, device string, err error) {
	code := proxyError(err)
	p.countFailure(rule, device, code, proxyReason(err), err)
	if code == message.ServiceUnavailable {
		o := w.Options()
		*o = o.SetUint(message.MaxAge, p.retryMaxAge)
	}
	w.SetCode(code)
	w.SetContentFormat(message.TextPlain)
	_, _ = w.Write([]byte(err.Error()))
}

// countFailure counts a refused or failed proxy request against rule
// ("" when no rule took it) and enters it in the recent errors.
func (p *proxy) countFailure(rule, device string, code message.Code, reason string, err error) {
	p.metrics.rules.ruleError(rule, reason, errorDetail{device: device, code: code, err: err})
}

// proxyReason is the bridge_rule_errors_total reason of a refused or
// failed proxy request.
func proxyReason(err error) string {
	switch {
	case errors.Is(err, errProxyAsleep):
		return reasonAsleep
	case errors.Is(err, errProxyUnknown), errors.Is(err, rules.ErrUnknownDevice):
		return reasonUnknownDevice
	case errors.Is(err, message.ProxyingNotSupported):
		return reasonNoRoute
	case errors.Is(err, message.MethodNotAllowed):
		return reasonMethod
	case errors.Is(err, rules.ErrEscape), errors.Is(err, message.BadRequest):
		return reasonEscape
	}
	return reasonOf(err)
}

// forwardTarget is the target of a forward-proxy request.
type forwardTarget struct {
	secure bool
	host   string // as written: a device name or an IP literal
	port   uint16 // 0: none given
	path   []string
	query  []string
}

// parseForward reads the target of a forward-proxy request: Proxy-Uri
// (an absolute coap:// or coaps:// URI, decomposed into options as a
// client does, RFC 7252 §6.4), or Proxy-Scheme with the request's
// Uri-Host, Uri-Port, Uri-Path and Uri-Query (§6.5). Another scheme is
// 5.05: this proxy speaks CoAP to devices only.
func parseForward(o message.Options) (forwardTarget, error) {
	var ft forwardTarget
	var scheme string
	if s, ok := o.ProxyURI(); ok {
		u, uo, err := uri.Parse(s)
		if err != nil {
			if i := strings.Index(s, "://"); i > 0 {
				if _, coap := uri.Scheme(strings.ToLower(s[:i])); !coap {
					return ft, fmt.Errorf("scheme %q: %w", s[:i], message.ProxyingNotSupported)
				}
			}
			return ft, fmt.Errorf("Proxy-Uri: %w (%w)", err, message.BadOption)
		}
		scheme, o = u.Scheme, uo
		if _, ok := o.String(message.URIHost); !ok {
			o = o.SetString(message.URIHost, u.Hostname()) // an IP literal
		}
	} else {
		scheme, _ = o.ProxyScheme()
	}
	var ok bool
	if ft.secure, ok = uri.Scheme(strings.ToLower(scheme)); !ok {
		return ft, fmt.Errorf("scheme %q: %w", scheme, message.ProxyingNotSupported)
	}
	if ft.host, ok = o.String(message.URIHost); !ok {
		// Without Uri-Host the target is the bridge itself.
		return ft, fmt.Errorf("Proxy-Scheme without Uri-Host names the bridge itself (%w)", message.Forbidden)
	}
	if v, err := o.Uint(message.URIPort); err == nil {
		ft.port = uint16(v)
	}
	ft.path = o.Strings(message.URIPath)
	ft.query = o.Strings(message.URIQuery)
	return ft, nil
}

// deviceAt names the device a forward-proxy target addresses: a
// [[device]] or learned device by name, or the one at an IP address and
// port (a [[device]]'s url, or where a learned device last spoke from).
func (p *proxy) deviceAt(set *rules.Set, ft forwardTarget) (string, bool) {
	ip, err := netip.ParseAddr(strings.Trim(ft.host, "[]"))
	if err != nil {
		if _, ok := set.Device(ft.host); ok {
			return ft.host, true
		}
		return ft.host, p.devices.knows(ft.host)
	}
	port := ft.port
	if port == 0 {
		port = uri.DefaultPortOf(ft.secure)
	}
	ap := netip.AddrPortFrom(ip.Unmap(), port)
	for _, d := range set.Devices {
		if d.Host == "" || d.Secure != ft.secure {
			continue
		}
		if h, err := netip.ParseAddrPort(d.Host); err == nil && unmapped(h) == ap {
			return d.Name, true
		}
	}
	if p.devices.learned != nil {
		if name, ok := p.devices.learned.at(ap); ok {
			return name, true
		}
	}
	return "", false
}

// knows reports whether a device without url has spoken to the bridge.
func (d *deviceClients) knows(name string) bool {
	if d.learned == nil {
		return false
	}
	_, ok := d.learned.lookup(name)
	return ok
}
