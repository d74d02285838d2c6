package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// Candidate is a rule that did not take a path or topic, with how far its
// pattern got: what a dry run shows when no rule matches. It is for
// diagnostics; the bridge's own matching is Set.MatchPath and
// Set.MatchCommand.
type Candidate struct {
	Kind    Kind
	Name    string
	Pattern Pattern
	Pos     Pos
	// Matched counts the leading segments (topic levels) the pattern
	// matched before the first one that differed.
	Matched int
	// MethodOnly is set when the pattern matches the whole path but the
	// rule does not take the request's method.
	MethodOnly bool
	// Reason says, for a person, where the pattern stopped matching.
	Reason string
}

// NearestRoutes ranks the ingress, resource and reverse proxy rules for a CoAP request
// that none takes (MatchPath failed with ErrNoRoute or
// ErrMethodNotAllowed): rules whose path matches but not the method first,
// then by the number of leading segments matched, in file order among
// equals. It returns at most n.
func (s *Set) NearestRoutes(m message.Code, segs []string, n int) []Candidate {
	var out []Candidate
	add := func(r *Route) {
		c := Candidate{Pattern: r.Path(), Pos: r.pos(), Name: r.Name()}
		switch {
		case r.Ingress != nil:
			c.Kind = KindIngress
		case r.Proxy != nil:
			c.Kind = KindProxy
		default:
			c.Kind = KindResource
		}
		var full bool
		c.Matched, full, c.Reason = prefixMatch(c.Pattern, segs, "segment", "the path")
		if full && !r.Allows(m) {
			c.MethodOnly = true
			c.Reason = fmt.Sprintf("matches the path but allows %s, not %s", methodList(r.methods()), m)
		}
		out = append(out, c)
	}
	for _, r := range s.Ingress {
		add(&Route{Ingress: r})
	}
	for _, r := range s.Resources {
		add(&Route{Resource: r})
	}
	for _, r := range s.Proxies {
		if !r.Path.IsZero() {
			add(&Route{Proxy: r})
		}
	}
	return rank(out, n)
}

// NearestCommands ranks the command rules for an MQTT topic that none
// matches, by the number of leading topic levels their filter matched, in
// file order among equals. It returns at most n.
func (s *Set) NearestCommands(topic string, n int) []Candidate {
	levels := strings.Split(topic, "/")
	out := make([]Candidate, 0, len(s.Commands))
	for _, r := range s.Commands {
		c := Candidate{Kind: KindCommand, Name: r.Name, Pattern: r.Filter, Pos: r.Pos}
		if strings.HasPrefix(topic, "$") && r.Filter.wildFirst() {
			c.Reason = "a topic starting with '$' is not matched by a filter starting with a capture [MQTT-4.7.2-1]"
		} else {
			c.Matched, _, c.Reason = prefixMatch(r.Filter, levels, "level", "the topic")
		}
		out = append(out, c)
	}
	return rank(out, n)
}

func rank(cs []Candidate, n int) []Candidate {
	slices.SortStableFunc(cs, func(a, b Candidate) int {
		switch {
		case a.MethodOnly != b.MethodOnly:
			if a.MethodOnly {
				return -1
			}
			return 1
		case a.Matched != b.Matched:
			return b.Matched - a.Matched
		}
		return 0
	})
	if len(cs) > n {
		cs = cs[:n]
	}
	return cs
}

// prefixMatch walks a pattern along concrete segments: how many leading
// ones it matches, whether it matches them all, and where it stops. A
// {name...} takes one or more segments, as in Index.
func prefixMatch(p Pattern, segs []string, unit, whole string) (matched int, full bool, reason string) {
	for i, s := range p.segs {
		if i >= len(segs) {
			return i, false, fmt.Sprintf("%s ends after %d %ss; the rule wants %s next", whole, len(segs), unit, segDisplay(s))
		}
		switch s.Kind {
		case SegRest:
			return len(segs), true, ""
		case SegLiteral:
			if segs[i] != s.Text {
				return i, false, fmt.Sprintf("%s %d is %q; the rule wants %q", unit, i+1, segs[i], s.Text)
			}
		}
	}
	if len(segs) > len(p.segs) {
		return len(p.segs), false, fmt.Sprintf("%s goes on with %q after the rule's last %s", whole, segs[len(p.segs)], unit)
	}
	return len(segs), true, ""
}

// segDisplay writes a segment as in a pattern: text, {name} or {name...}.
func segDisplay(s Segment) string {
	switch s.Kind {
	case SegCapture:
		return "{" + s.Text + "}"
	case SegRest:
		return "{" + s.Text + "...}"
	}
	return fmt.Sprintf("%q", s.Text)
}

func methodList(ms []message.Code) string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.String()
	}
	return strings.Join(names, ", ")
}
