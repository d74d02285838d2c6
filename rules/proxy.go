package rules

import (
	"fmt"
	"strings"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// KindProxy names [[proxy]] sections: CoAP (and HTTP) clients reach
// devices through the bridge.
const KindProxy Kind = "proxy"

// DefaultProxyTimeout bounds a proxied exchange with a device when the
// rule sets no timeout.
const DefaultProxyTimeout = 10 * time.Second

// StalePolicy says what a proxy answers from a response whose Max-Age has
// run out when the device cannot be asked (asleep, unreachable, no answer
// in time).
type StalePolicy uint8

// Stale policies.
const (
	// StaleRefuse answers the error: 5.03 for a sleeping device, 5.04
	// for one that did not answer, 5.02 for one that cannot be reached.
	StaleRefuse StalePolicy = iota
	// StaleServe answers the stale response with Max-Age 0, which tells
	// the client it is not fresh (RFC 7252 §5.10.5).
	StaleServe
)

// String returns "refuse" or "serve", as written in rule files.
func (s StalePolicy) String() string {
	if s == StaleServe {
		return "serve"
	}
	return "refuse"
}

// Proxy lets clients reach devices through the bridge (RFC 7252 §5.7):
// a request on Path (a reverse proxy), a forward-proxy request
// (Proxy-Uri, or Proxy-Scheme with Uri-Host) whose target URL matches
// URL, or an HTTP request under /coap/ (RFC 8075) goes to the device URL
// names, for the methods listed, through the bridge's response cache.
// URL's host names a device — a [[device]] or, from a capture, any device
// the bridge knows — never an arbitrary address: the bridge is not an
// open proxy.
type Proxy struct {
	Name string
	// Path, when set, is the path on the bridge's CoAP server.
	Path Pattern
	// URL is the device resource: "coap://{device}/{path...}".
	URL     URLTemplate
	Methods []message.Code
	Timeout time.Duration
	// Forward allows forward-proxy requests whose target matches URL.
	Forward bool
	// HTTP allows HTTP requests (GET /coap/{device}/{path...}) whose
	// device and path match URL.
	HTTP bool
	// Cache: 2.05 responses to GET are cached and served while fresh
	// (RFC 7252 §5.6).
	Cache bool
	Stale StalePolicy
	Pos   Pos
	hash  Hash
}

// Allows reports whether the proxy rule takes the method.
func (p *Proxy) Allows(m message.Code) bool {
	for _, x := range p.Methods {
		if x == m {
			return true
		}
	}
	return false
}

func (x *dec) proxy() *Proxy {
	r := &Proxy{Pos: x.e.pos, hash: x.hash(), Timeout: DefaultProxyTimeout, Cache: true}
	r.Name, _, _ = x.str("name", true)
	if x.e.byKey["path"] != nil {
		r.Path, _ = x.pattern("path", PathSyntax, false)
	}
	if s, line, ok := x.str("url", true); ok {
		u, err := ParseURLTemplate(s)
		switch {
		case err != nil:
			x.d.addf(x.pos(line), "key \"url\": %s", strings.TrimPrefix(err.Error(), "rules: "))
		case u.host != "" && !validDeviceName(u.host):
			x.d.addf(x.pos(line), "key \"url\": host %q: a proxy reaches devices only; write {device} or a [[device]] name", clip(u.host))
		}
		r.URL = u
	}
	r.Methods = []message.Code{message.GET}
	if ms, line, ok := x.strs("methods", false); ok {
		r.Methods = r.Methods[:0]
		for _, s := range ms {
			m, err := parseMethod(s)
			if err != nil {
				x.d.addf(x.pos(line), "key \"methods\": %v", err)
				continue
			}
			r.Methods = append(r.Methods, m)
		}
	}
	if d, ok := x.duration("timeout", false); ok {
		r.Timeout = d
	}
	r.Forward = x.boolean("forward")
	r.HTTP = x.boolean("http")
	if x.e.byKey["cache"] != nil {
		r.Cache = x.boolean("cache")
	}
	if s, line, ok := x.str("stale", false); ok {
		switch s {
		case "refuse":
		case "serve":
			r.Stale = StaleServe
		default:
			x.d.addf(x.pos(line), "key \"stale\": %q is not \"refuse\" or \"serve\"", clip(s))
		}
	}
	if r.Path.IsZero() && !r.Forward && !r.HTTP && x.e.byKey["path"] == nil {
		x.d.addf(x.e.pos, "%s: set \"path\" (reverse proxy), forward = true or http = true: the rule would take no request", x.what())
	}
	return r
}

// proxyPattern is the pattern forward and HTTP proxy requests are matched
// against: the device as the first segment, then the url's path.
func (u URLTemplate) proxyPattern() Pattern {
	first := Segment{Kind: SegLiteral, Text: u.host}
	if u.hostCapture != "" {
		first = Segment{Kind: SegCapture, Text: u.hostCapture}
	}
	return Pattern{raw: u.raw, syntax: PathSyntax, segs: append([]Segment{first}, u.path.segs...)}
}

// buildProxies indexes the url templates of proxy rules that take forward
// or HTTP requests, reporting ambiguous pairs, and checks each rule's
// templates.
func buildProxies(s *Set, d *diags, at keyLines) {
	s.proxies = NewIndex[*Proxy](PathSyntax)
	for _, r := range s.Proxies {
		what := ruleName(KindProxy, r.Name)
		if !r.Path.IsZero() {
			b := bindingsOf(r.Path)
			checkTemplate(d, at.key(r.Pos, "url"), what, "url", r.URL.captures(), b)
		}
		if r.URL.host != "" {
			if dev, ok := s.devices[r.URL.host]; !ok {
				d.addf(at.key(r.Pos, "url"), "%s: url host %q is no [[device]]: a proxy reaches devices only (write {device} or a [[device]] name)%s", what, r.URL.host, suggest(r.URL.host, deviceNames(s)))
			} else if dev.URL != "" && dev.Secure != r.URL.secure {
				d.addf(at.key(r.Pos, "url"), "%s: url %q uses a different scheme than device %q (%s)", what, r.URL, dev.Name, dev.URL)
			}
		}
		if !r.Forward && !r.HTTP || r.URL.raw == "" || r.URL.path.IsZero() {
			continue
		}
		p := r.URL.proxyPattern()
		var clash []*Proxy
		s.proxies.Overlapping(p, func(q Pattern, o *Proxy) bool {
			// Forward requests name a scheme, HTTP requests none.
			sameVia := r.Forward && o.Forward && o.URL.secure == r.URL.secure || r.HTTP && o.HTTP
			if sameVia && intersects(r.Methods, o.Methods) && Ambiguous(p, q) {
				clash = append(clash, o)
			}
			return len(clash) < maxPairs && !d.full()
		})
		sortByPos(clash, func(o *Proxy) Pos { return o.Pos })
		for _, o := range clash {
			d.addf(r.Pos, "%s: url %q overlaps url %q of %s at %s, and neither is more specific", what, r.URL, o.URL, ruleName(KindProxy, o.Name), o.Pos)
		}
		s.proxies.Add(p, r)
	}
}

// ProxyVia says how a request reached the proxy.
type ProxyVia uint8

// How a request reaches the proxy.
const (
	// ViaForward: a CoAP request with Proxy-Uri or Proxy-Scheme.
	ViaForward ProxyVia = iota + 1
	// ViaHTTP: an HTTP request under /coap/.
	ViaHTTP
)

// MatchProxy finds the proxy rule for a forward-proxy (via ViaForward) or
// HTTP (ViaHTTP) request for device's resource segs with method m, and
// binds the rule url's captures. secure is the target's scheme; an HTTP
// request names none (any is nil) and takes a rule of either. It fails
// with ErrNoRoute when no rule's url matches, ErrMethodNotAllowed when
// one does for other methods, or ErrEscape for a segment that cannot
// stand as one (CheckSegment).
func (s *Set) MatchProxy(via ProxyVia, secure *bool, device string, segs []string, m message.Code) (*Proxy, Captures, error) {
	all := make([]string, 0, len(segs)+1)
	all = append(append(all, device), segs...)
	takes := func(r *Proxy) bool {
		if via == ViaForward && !r.Forward || via == ViaHTTP && !r.HTTP {
			return false
		}
		return secure == nil || r.URL.secure == *secure
	}
	r, caps, ok, _ := s.proxies.Match(all, func(r *Proxy) bool { return takes(r) && r.Allows(m) }, nil)
	if !ok {
		if _, _, other, _ := s.proxies.Match(all, takes, nil); other {
			return nil, nil, ErrMethodNotAllowed
		}
		return nil, nil, ErrNoRoute
	}
	if err := r.URL.proxyPattern().checkCaptured(all); err != nil {
		return nil, nil, err
	}
	return r, caps, nil
}

// ProxyTarget renders a proxy rule's url with the captures of its match
// (its path's for a reverse proxy, its url's for MatchProxy): the device
// and the request options naming its resource, as Target does for a
// command.
func (s *Set) ProxyTarget(r *Proxy, caps Captures) (Target, error) {
	t, err := s.target(r.URL, caps)
	if err != nil {
		return t, err
	}
	if t.Name == "" {
		// Parsing refuses a literal address; a template is never one.
		return Target{}, fmt.Errorf("%w: %s", ErrUnknownDevice, r.URL)
	}
	return t, nil
}
