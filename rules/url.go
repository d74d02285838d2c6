package rules

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
)

// parseDeviceURL checks a device address: coap:// or coaps://, a host, an
// optional port, nothing else. The scheme, its default port and the host
// and port rules are the uri package's.
func parseDeviceURL(s string) (uri.Authority, error) {
	if !strings.Contains(s, "://") {
		return uri.Authority{}, fmt.Errorf("bad url %q: missing scheme coap:// or coaps://", clip(s))
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return uri.Authority{}, fmt.Errorf("bad url %q: %v", clip(s), err)
	}
	secure, ok := uri.Scheme(u.Scheme)
	switch {
	case u.Scheme == "":
		return uri.Authority{}, fmt.Errorf("bad url %q: missing scheme coap:// or coaps://", clip(s))
	case !ok:
		return uri.Authority{}, fmt.Errorf("bad url %q: scheme %q is not coap or coaps", clip(s), clip(u.Scheme))
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return uri.Authority{}, fmt.Errorf("bad url %q: missing host", clip(s))
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return uri.Authority{}, fmt.Errorf("bad url %q: a device url is scheme://host[:port] only", clip(s))
	}
	a, err := uri.ParseAuthority(secure, u.Host)
	if err != nil {
		return uri.Authority{}, fmt.Errorf("bad url %q: %s", clip(s), strings.TrimPrefix(err.Error(), uri.ErrInvalidURL.Error()+": "))
	}
	return a, nil
}

// URLTemplate is a command's target: "coap://{device}/{resource...}". The host
// is a capture (whose value must name a device), a device name, or a literal
// host[:port].
type URLTemplate struct {
	raw    string
	secure bool
	// hostCapture is the capture naming the device, or "".
	hostCapture string
	// host is a literal host as written: a device name or host[:port],
	// whose address and options are authority.
	host      string
	authority uri.Authority
	path      Pattern
}

// ParseURLTemplate parses a command URL template.
func ParseURLTemplate(s string) (URLTemplate, error) {
	t := URLTemplate{raw: s}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return t, fmt.Errorf("bad url %q: missing scheme coap:// or coaps://", clip(s))
	}
	if t.secure, ok = uri.Scheme(scheme); !ok {
		return t, fmt.Errorf("bad url %q: scheme %q is not coap or coaps", clip(s), clip(scheme))
	}
	if strings.ContainsAny(rest, "?#") {
		return t, fmt.Errorf("bad url %q: query and fragment are not supported", clip(s))
	}
	authority, path := rest, "/"
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	switch {
	case authority == "":
		return t, fmt.Errorf("bad url %q: missing host", clip(s))
	case strings.HasPrefix(authority, "{"):
		name, ok := strings.CutSuffix(authority[1:], "}")
		if !ok || !validName(name) {
			return t, fmt.Errorf("bad url %q: host must be {name}, a device name or host[:port]", clip(s))
		}
		t.hostCapture = name
	default:
		a, err := uri.ParseAuthority(t.secure, authority)
		if err != nil {
			return t, fmt.Errorf("bad url %q: bad host %q", clip(s), clip(authority))
		}
		t.host, t.authority = authority, a
	}
	p, err := ParsePath(path)
	if err != nil {
		return t, fmt.Errorf("bad url %q: %w", clip(s), err)
	}
	t.path = p
	return t, nil
}

// String returns the template as written.
func (t URLTemplate) String() string { return t.raw }

// HostCapture returns the capture naming the target device, or "".
func (t URLTemplate) HostCapture() string { return t.hostCapture }

// Path returns the path part of the template.
func (t URLTemplate) Path() Pattern { return t.path }

// captures lists every capture the template uses.
func (t URLTemplate) captures() []Segment {
	var out []Segment
	if t.hostCapture != "" {
		out = append(out, Segment{Kind: SegCapture, Text: t.hostCapture})
	}
	for _, s := range t.path.segs {
		if s.Kind != SegLiteral {
			out = append(out, s)
		}
	}
	return out
}

// Target is a command's destination, built once per command: the address
// to send to and the request options naming the resource, ready to go on
// the wire without a URL round trip.
type Target struct {
	// Device is the registry entry when the host names a device; its
	// address, scheme and credentials apply.
	Device *Device
	// Name is the device the host names: a [[device]] (Device set) or,
	// from a host capture, any name ("" for a literal address).
	Name string
	// Learned: the rules hold no address for Name (a device without url,
	// or a name that is no [[device]]); the bridge sends to where the
	// device last spoke from, or fails when it never did.
	Learned bool
	// Secure is true for coaps.
	Secure bool
	// Host is host:port; "" when Learned.
	Host string
	// Path holds the Uri-Path option values (RFC 7252 §6.4).
	Path []string
	// Options are the request's Uri-Host, Uri-Port and Uri-Path options
	// (RFC 7252 §6.4).
	Options message.Options
}

// URL returns the target as a coap:// or coaps:// URL, for results and
// logs; each path segment is percent-encoded.
func (t Target) URL() *url.URL {
	escaped := make([]string, len(t.Path))
	for i, p := range t.Path {
		escaped[i] = url.PathEscape(p)
	}
	host := t.Host
	if t.Learned {
		host = t.Name
	}
	return &url.URL{
		Scheme:  uri.SchemeName(t.Secure),
		Host:    host,
		Path:    "/" + strings.Join(t.Path, "/"),
		RawPath: "/" + strings.Join(escaped, "/"),
	}
}
