// Package uri is the one home of coap:// and coaps:// URIs: the schemes and
// their default ports (RFC 7252 §6.1, §6.2), the decomposition of a URI into
// request options (§6.4) and its composition from them (§6.5). It is a pure
// leaf (no I/O), so the rule loader uses it as well as the CoAP client.
package uri

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// Default ports (RFC 7252 §6.1, §6.2).
const (
	DefaultPort       = 5683
	DefaultSecurePort = 5684
)

// ErrInvalidURL means a URL cannot be mapped to CoAP options (RFC 7252 §6.4).
var ErrInvalidURL = errors.New("coap: invalid URL")

// maxOptionLen bounds Uri-Host, Uri-Path and Uri-Query values (RFC 7252
// §5.10).
const maxOptionLen = 255

// Scheme reports whether scheme is coap (secure false) or coaps (secure
// true), in any case; ok is false for any other scheme.
func Scheme(scheme string) (secure, ok bool) {
	switch strings.ToLower(scheme) {
	case "coap":
		return false, true
	case "coaps":
		return true, true
	}
	return false, false
}

// SchemeName returns "coaps" when secure, else "coap".
func SchemeName(secure bool) string {
	if secure {
		return "coaps"
	}
	return "coap"
}

// DefaultPortOf returns the default port of the scheme (RFC 7252 §6.1,
// §6.2).
func DefaultPortOf(secure bool) uint16 {
	if secure {
		return DefaultSecurePort
	}
	return DefaultPort
}

// Authority is the host and port part of a coap URI with the port made
// explicit.
type Authority struct {
	Secure bool
	// Host is a host name or an IP literal without brackets.
	Host string
	Port uint16
}

// ParseAuthority parses the authority of a coap URI, "host", "host:port",
// "[v6]" or "[v6]:port" (no user information), filling in the scheme's
// default port.
func ParseAuthority(secure bool, hostport string) (Authority, error) {
	u, err := url.Parse(SchemeName(secure) + "://" + hostport)
	if err != nil || u.User != nil || u.Hostname() == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return Authority{}, fmt.Errorf("%w: bad host %q", ErrInvalidURL, hostport)
	}
	return authority(secure, u.Hostname(), u.Port())
}

// authority checks the host and the port (empty: the default).
func authority(secure bool, host, port string) (Authority, error) {
	a := Authority{Secure: secure, Host: host, Port: DefaultPortOf(secure)}
	if _, err := netip.ParseAddr(host); err != nil {
		if err := checkHostName(host); err != nil {
			return Authority{}, err
		}
	}
	if port != "" {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return Authority{}, fmt.Errorf("%w: port %q", ErrInvalidURL, port)
		}
		a.Port = uint16(p)
	}
	return a, nil
}

// checkHostName checks a registered name for Uri-Host.
func checkHostName(h string) error {
	for i := 0; i < len(h); i++ {
		if !hostAllowed(h[i]) {
			return fmt.Errorf("%w: invalid character %q in host", ErrInvalidURL, h[i])
		}
	}
	if len(h) > maxOptionLen {
		return fmt.Errorf("%w: host longer than %d bytes", ErrInvalidURL, maxOptionLen)
	}
	return nil
}

// Addr returns "host:port", the address to resolve and send to.
func (a Authority) Addr() string { return net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port))) }

// Options returns the request options for the authority (RFC 7252 §6.4
// steps 5-6): Uri-Host, lower case, when the host is not an IP literal,
// and Uri-Port when the port is not the scheme's default.
func (a Authority) Options() message.Options {
	var opts message.Options
	if _, err := netip.ParseAddr(a.Host); err != nil {
		opts = opts.AddString(message.URIHost, strings.ToLower(a.Host))
	}
	if a.Port != DefaultPortOf(a.Secure) {
		opts = opts.SetUint(message.URIPort, uint32(a.Port))
	}
	return opts
}

// AppendPath adds one Uri-Path option per segment (RFC 7252 §6.4 step 8).
// The segments are the decoded values, sent as they are.
func AppendPath(opts message.Options, segs []string) (message.Options, error) {
	for _, s := range segs {
		if len(s) > maxOptionLen {
			return opts, fmt.Errorf("%w: path segment longer than %d bytes", ErrInvalidURL, maxOptionLen)
		}
		opts = opts.AddString(message.URIPath, s)
	}
	return opts, nil
}

// Parse decomposes a coap:// or coaps:// URL into request options
// (RFC 7252 §6.4): Uri-Host when the host is not an IP literal, Uri-Port when
// the port is not the scheme's default, one Uri-Path per percent-decoded path
// segment and one Uri-Query per "&"-separated query part.
func Parse(raw string) (*url.URL, message.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	// §6.4 steps 1-3: absolute, scheme coap/coaps, no fragment.
	if !u.IsAbs() || u.Opaque != "" {
		return nil, nil, fmt.Errorf("%w: %q is not an absolute URI", ErrInvalidURL, raw)
	}
	secure, ok := Scheme(u.Scheme)
	if !ok {
		return nil, nil, fmt.Errorf("%w: scheme %q", ErrInvalidURL, u.Scheme)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, nil, fmt.Errorf("%w: fragment not allowed", ErrInvalidURL)
	}
	host := u.Hostname()
	if host == "" {
		return nil, nil, fmt.Errorf("%w: missing host", ErrInvalidURL)
	}
	// §6.4 step 5: a registered name is percent-decoded for Uri-Host.
	if _, err := netip.ParseAddr(host); err != nil {
		if host, err = url.PathUnescape(host); err != nil {
			return nil, nil, fmt.Errorf("%w: host: %w", ErrInvalidURL, err)
		}
	}
	a, err := authority(secure, host, u.Port())
	if err != nil {
		return nil, nil, err
	}
	opts := a.Options()
	// §6.4 step 8: path segments, each percent-decoded; "" and "/" give none.
	if p := u.EscapedPath(); p != "" && p != "/" {
		var segs []string
		for seg := range strings.SplitSeq(strings.TrimPrefix(p, "/"), "/") {
			v, err := url.PathUnescape(seg)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: path segment %q: %w", ErrInvalidURL, seg, err)
			}
			segs = append(segs, v)
		}
		if opts, err = AppendPath(opts, segs); err != nil {
			return nil, nil, err
		}
	}
	// §6.4 step 9: query parts split on "&", each percent-decoded ('+' is literal).
	if u.RawQuery != "" || u.ForceQuery {
		for part := range strings.SplitSeq(u.RawQuery, "&") {
			v, err := url.PathUnescape(part)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: query %q: %w", ErrInvalidURL, part, err)
			}
			if len(v) > maxOptionLen {
				return nil, nil, fmt.Errorf("%w: query part longer than %d bytes", ErrInvalidURL, maxOptionLen)
			}
			opts = opts.AddString(message.URIQuery, v)
		}
	}
	return u, opts, nil
}

// Addr returns the "host:port" to send to for a parsed coap URL.
func Addr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		secure, _ := Scheme(u.Scheme)
		port = strconv.Itoa(int(DefaultPortOf(secure)))
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// Build composes a URL from request options (RFC 7252 §6.5). peer supplies
// the host and port when Uri-Host or Uri-Port are absent.
func Build(scheme string, peer netip.AddrPort, opts message.Options) string {
	scheme = strings.ToLower(scheme)
	secure, _ := Scheme(scheme)
	defPort := DefaultPortOf(secure)
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString("://")
	if h, ok := opts.String(message.URIHost); ok {
		b.WriteString(escape(h, hostAllowed))
	} else if a := peer.Addr().Unmap(); a.Is6() {
		b.WriteByte('[')
		b.WriteString(a.String())
		b.WriteByte(']')
	} else {
		b.WriteString(a.String())
	}
	port := peer.Port()
	if p, err := opts.Uint(message.URIPort); err == nil {
		port = uint16(p)
	}
	if port != defPort && port != 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(port)))
	}
	segs := opts.Strings(message.URIPath)
	if len(segs) == 0 {
		b.WriteByte('/')
	}
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(escape(s, pcharAllowed))
	}
	for i, q := range opts.Strings(message.URIQuery) {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(escape(q, queryAllowed))
	}
	return b.String()
}

// Character classes of RFC 3986 used for escaping.
const (
	unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
	subDelims  = "!$'()*+,;="
)

func pcharAllowed(c byte) bool { return strings.IndexByte(unreserved+subDelims+"&:@", c) >= 0 }
func hostAllowed(c byte) bool  { return strings.IndexByte(unreserved+subDelims+"&", c) >= 0 }

// queryAllowed excludes "&", the separator between Uri-Query options.
func queryAllowed(c byte) bool {
	return c != '&' && strings.IndexByte(unreserved+subDelims+":@/?", c) >= 0
}

func escape(s string, allowed func(byte) bool) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if allowed(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
