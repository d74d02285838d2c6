package coapside

import (
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

// ParseURL decomposes a coap:// or coaps:// URL into request options
// (RFC 7252 §6.4): Uri-Host when the host is not an IP literal, Uri-Port when
// the port is not the scheme's default, one Uri-Path per percent-decoded path
// segment and one Uri-Query per "&"-separated query part.
func ParseURL(raw string) (*url.URL, message.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	// §6.4 steps 1-3: absolute, scheme coap/coaps, no fragment.
	if !u.IsAbs() || u.Opaque != "" {
		return nil, nil, fmt.Errorf("%w: %q is not an absolute URI", ErrInvalidURL, raw)
	}
	defPort := 0
	switch strings.ToLower(u.Scheme) {
	case "coap":
		defPort = DefaultPort
	case "coaps":
		defPort = DefaultSecurePort
	default:
		return nil, nil, fmt.Errorf("%w: scheme %q", ErrInvalidURL, u.Scheme)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, nil, fmt.Errorf("%w: fragment not allowed", ErrInvalidURL)
	}
	host := u.Hostname()
	if host == "" {
		return nil, nil, fmt.Errorf("%w: missing host", ErrInvalidURL)
	}
	var opts message.Options
	// §6.4 step 5: Uri-Host only for a registered name, not an IP literal.
	if _, err := netip.ParseAddr(host); err != nil {
		h, err := url.PathUnescape(host)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: host: %w", ErrInvalidURL, err)
		}
		for i := 0; i < len(h); i++ {
			if !hostAllowed(h[i]) {
				return nil, nil, fmt.Errorf("%w: invalid character %q in host", ErrInvalidURL, h[i])
			}
		}
		if len(h) > 255 {
			return nil, nil, fmt.Errorf("%w: host longer than 255 bytes", ErrInvalidURL)
		}
		opts = opts.AddString(message.URIHost, strings.ToLower(h))
	}
	// §6.4 step 6: Uri-Port only when it differs from the default.
	if ps := u.Port(); ps != "" {
		p, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || p == 0 {
			return nil, nil, fmt.Errorf("%w: port %q", ErrInvalidURL, ps)
		}
		if int(p) != defPort {
			opts = opts.SetUint(message.URIPort, uint32(p))
		}
	}
	// §6.4 step 8: path segments, each percent-decoded; "" and "/" give none.
	if p := u.EscapedPath(); p != "" && p != "/" {
		for seg := range strings.SplitSeq(strings.TrimPrefix(p, "/"), "/") {
			v, err := url.PathUnescape(seg)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: path segment %q: %w", ErrInvalidURL, seg, err)
			}
			if len(v) > 255 {
				return nil, nil, fmt.Errorf("%w: path segment longer than 255 bytes", ErrInvalidURL)
			}
			opts = opts.AddString(message.URIPath, v)
		}
	}
	// §6.4 step 9: query parts split on "&", each percent-decoded ('+' is literal).
	if u.RawQuery != "" || u.ForceQuery {
		for part := range strings.SplitSeq(u.RawQuery, "&") {
			v, err := url.PathUnescape(part)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: query %q: %w", ErrInvalidURL, part, err)
			}
			if len(v) > 255 {
				return nil, nil, fmt.Errorf("%w: query part longer than 255 bytes", ErrInvalidURL)
			}
			opts = opts.AddString(message.URIQuery, v)
		}
	}
	return u, opts, nil
}

// URLAddr returns the "host:port" to send to for a parsed coap URL.
func URLAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = strconv.Itoa(DefaultPort)
		if strings.EqualFold(u.Scheme, "coaps") {
			port = strconv.Itoa(DefaultSecurePort)
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// BuildURL composes a URL from request options (RFC 7252 §6.5). peer supplies
// the host and port when Uri-Host or Uri-Port are absent.
func BuildURL(scheme string, peer netip.AddrPort, opts message.Options) string {
	scheme = strings.ToLower(scheme)
	defPort := uint16(DefaultPort)
	if scheme == "coaps" {
		defPort = DefaultSecurePort
	}
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
