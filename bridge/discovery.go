package bridge

import (
	"net/url"
	"slices"
	"strings"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// isWellKnownCore reports whether a request's Uri-Path is /.well-known/core.
func isWellKnownCore(segs []string) bool {
	return len(segs) == 2 && segs[0] == ".well-known" && segs[1] == "core"
}

// serveWellKnownCore answers GET /.well-known/core (RFC 6690 §4) with what
// the bridge's CoAP server offers, filtered by the request's queries
// (§4.1): every concrete path of a resource rule that has a value, and the
// ingress rules the operator described with rt or if.
func (rs *resources) serveWellKnownCore(w coapside.ResponseWriter, r *coapside.Request, set *rules.Set, identity string) {
	if r.Method != message.GET {
		w.SetCode(message.MethodNotAllowed)
		return
	}
	coapside.WriteWellKnownCore(w, r, rs.discoveryResources(set, identity))
}

// discoveryResources lists the links of /.well-known/core for a requester
// with the given authenticated identity ("" for plain CoAP).
//
// A resource rule is listed by its concrete paths whose topic holds a
// value (a GET on the path would answer 4.04 otherwise), each with obs
// (RFC 7641 §6), the ct it is served with and the rule's rt and if. A
// path that another rule routes, or that only another identity may read
// (identity = "{capture}", or {identity} in the topic), is left out.
//
// An ingress rule is a pattern, not a resource: it is listed only when
// the operator describes it with rt or if, by its path as written; a
// capture that identity = "{capture}" binds is filled in with the
// requester's identity.
func (rs *resources) discoveryResources(set *rules.Set, identity string) []linkformat.Resource {
	var out []linkformat.Resource
	seen := map[string]bool{}
	for _, topic := range rs.cache.topics() {
		for _, m := range set.MatchResources(topic) {
			rule := m.Rule
			if rule.CheckIdentity(m.Captures, identity) != nil {
				continue
			}
			if id, ok := m.Captures.Get("identity"); ok && id != identity {
				continue
			}
			segs, err := rule.Path.RenderSegments(m.Captures)
			if err != nil {
				continue
			}
			if route, _, err := set.MatchPath(message.GET, segs, nil); err != nil || route.Resource != rule {
				continue
			}
			path := linkPath(segs)
			if seen[path] {
				continue
			}
			seen[path] = true
			res := linkformat.Resource{
				Path:          path,
				ResourceTypes: rule.ResourceTypes,
				Interfaces:    rule.Interfaces,
				Observable:    true,
			}
			if mt, ok := rs.resourceFormat(rule, topic); ok {
				res.ContentFormats = []uint16{uint16(mt)}
			}
			out = append(out, res)
		}
	}
	slices.SortFunc(out, func(a, b linkformat.Resource) int { return strings.Compare(a.Path, b.Path) })
	for _, in := range set.Ingress {
		if len(in.ResourceTypes) == 0 && len(in.Interfaces) == 0 {
			continue
		}
		out = append(out, linkformat.Resource{
			Path:          ingressLinkPath(in, identity),
			ResourceTypes: in.ResourceTypes,
			Interfaces:    in.Interfaces,
		})
	}
	return out
}

// resourceFormat is the Content-Format a GET on rule's path answers with
// for the latest message on topic (see serveResource).
func (rs *resources) resourceFormat(rule *rules.Resource, topic string) (message.MediaType, bool) {
	if rule.ContentFormat != nil {
		return message.MediaType(*rule.ContentFormat), true
	}
	v, ok := rs.cache.get(topic)
	if !ok || v.contentType == "" {
		return 0, false
	}
	return message.ParseMediaType(v.contentType)
}

// linkPath is the link target for Uri-Path segments: an absolute path with
// each segment percent-encoded (RFC 3986 §3.3).
func linkPath(segs []string) string {
	var sb strings.Builder
	for _, s := range segs {
		sb.WriteByte('/')
		sb.WriteString(url.PathEscape(s))
	}
	if sb.Len() == 0 {
		return "/"
	}
	return sb.String()
}

// ingressLinkPath is an ingress rule's path as written, with the capture
// that identity = "{capture}" binds filled in when the requester is
// authenticated.
func ingressLinkPath(in *rules.Ingress, identity string) string {
	if in.Identity == "" || identity == "" || rules.CheckSegment(identity) != nil {
		return in.Path.String()
	}
	var sb strings.Builder
	for _, s := range in.Path.Segments() {
		sb.WriteByte('/')
		switch {
		case s.Kind == rules.SegLiteral:
			sb.WriteString(url.PathEscape(s.Text))
		case s.Kind == rules.SegCapture && s.Text == in.Identity:
			sb.WriteString(url.PathEscape(identity))
		case s.Kind == rules.SegRest:
			sb.WriteString("{" + s.Text + "...}")
		default:
			sb.WriteString("{" + s.Text + "}")
		}
	}
	if sb.Len() == 0 {
		return "/"
	}
	return sb.String()
}
