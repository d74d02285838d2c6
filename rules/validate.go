package rules

import (
	"net"
	"sort"
	"strings"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// validate runs the checks that span rules and files, then builds the
// indexes. at places a problem with one key at that key's line.
func validate(s *Set, d *diags, at keyLines) {
	checkNames(s, d)
	checkDevices(s, d, at)
	checkCaptures(s, d, at)
	checkWatches(s, d)
	buildRoutes(s, d)
	buildProxies(s, d, at)
	buildCommands(s, d)
	checkLoops(s, d)
}

// maxPairs bounds the conflicting rules reported against one rule.
const maxPairs = 5

type named struct {
	kind Kind
	name string
	pos  Pos
}

// checkNames reports rule names used twice, across kinds and files: a name
// identifies a rule in logs, metrics and reloads.
func checkNames(s *Set, d *diags) {
	var all []named
	for _, r := range s.Ingress {
		all = append(all, named{KindIngress, r.Name, r.Pos})
	}
	for _, r := range s.Observe {
		all = append(all, named{KindObserve, r.Name, r.Pos})
	}
	for _, r := range s.Poll {
		all = append(all, named{KindPoll, r.Name, r.Pos})
	}
	for _, r := range s.Commands {
		all = append(all, named{KindCommand, r.Name, r.Pos})
	}
	for _, r := range s.Resources {
		all = append(all, named{KindResource, r.Name, r.Pos})
	}
	for _, r := range s.Proxies {
		all = append(all, named{KindProxy, r.Name, r.Pos})
	}
	first := map[string]named{}
	for _, n := range all {
		if n.name == "" {
			continue
		}
		if p, dup := first[n.name]; dup {
			d.addf(n.pos, "duplicate rule name %q: also %s at %s", n.name, ruleName(p.kind, p.name), p.pos)
			continue
		}
		first[n.name] = n
	}
	for _, dev := range s.Devices {
		if dev.Name == "" {
			continue
		}
		if p, dup := s.devices[dev.Name]; dup {
			d.addf(dev.Pos, "duplicate device %q: also at %s", dev.Name, p.Pos)
			continue
		}
		s.devices[dev.Name] = dev
	}
}

func deviceNames(s *Set) []string {
	names := make([]string, 0, len(s.devices))
	for n := range s.devices {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// checkDevices reports device references that name no [[device]].
func checkDevices(s *Set, d *diags, at keyLines) {
	check := func(kind Kind, name string, pos Pos, devs []string) {
		for _, dn := range devs {
			switch _, ok := s.devices[dn]; {
			case dn == AllDevices && len(devs) > 1:
				d.addf(pos, "%s: devices = [\"*\"] means every device; list no other with it", ruleName(kind, name))
			case dn == AllDevices:
			case !ok:
				d.addf(pos, "%s: unknown device %q%s", ruleName(kind, name), dn, suggest(dn, deviceNames(s)))
			}
		}
	}
	for _, r := range s.Observe {
		check(KindObserve, r.Name, r.Pos, r.Devices)
	}
	for _, r := range s.Poll {
		check(KindPoll, r.Name, r.Pos, r.Devices)
	}
	for _, c := range s.Commands {
		if c.URL.host == "" {
			continue
		}
		what := ruleName(KindCommand, c.Name)
		host := c.URL.host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
			if _, ok := s.devices[h]; ok {
				d.addf(at.key(c.Pos, "url"), "%s: url %q names device %q with a port; the device's url decides the address", what, c.URL, h)
				continue
			}
		}
		dev, ok := s.devices[host]
		switch {
		case ok && dev.URL != "" && dev.Secure != c.URL.secure:
			d.addf(at.key(c.Pos, "url"), "%s: url %q uses a different scheme than device %q (%s)", what, c.URL, dev.Name, dev.URL)
		case !ok && net.ParseIP(strings.Trim(host, "[]")) == nil && !strings.Contains(host, ".") && host != "localhost":
			// A bare single-label name is almost always a device name.
			d.addf(at.key(c.Pos, "url"), "%s: url host %q is not a device, an IP address or a domain name%s", what, host, suggest(host, deviceNames(s)))
		}
	}
}

// bindings maps capture names to how they were bound.
type bindings map[string]SegKind

func bindingsOf(p Pattern) bindings {
	b := bindings{}
	for _, s := range p.segs {
		if s.Kind != SegLiteral {
			b[s.Text] = s.Kind
		}
	}
	return b
}

// checkTemplate reports captures a template uses that the rule does not bind,
// or binds with the other arity.
func checkTemplate(d *diags, pos Pos, what, key string, used []Segment, b bindings) {
	for _, u := range used {
		if u.Kind == SegLiteral {
			continue
		}
		k, ok := b[u.Text]
		switch {
		case !ok:
			names := make([]string, 0, len(b))
			for n := range b {
				names = append(names, n)
			}
			sort.Strings(names)
			d.addf(pos, "%s: %s uses {%s}, which is not captured%s", what, key, u.Text, suggest(u.Text, names))
		case k == SegRest && u.Kind == SegCapture:
			d.addf(pos, "%s: %s uses {%s} but it captures several segments; write {%s...}", what, key, u.Text, u.Text)
		case k == SegCapture && u.Kind == SegRest:
			d.addf(pos, "%s: %s uses {%s...} but it captures one segment; write {%s}", what, key, u.Text, u.Text)
		}
	}
}

func checkCaptures(s *Set, d *diags, at keyLines) {
	for _, r := range s.Ingress {
		b := bindingsOf(r.Path)
		if _, ok := b["identity"]; !ok {
			b["identity"] = SegCapture
		}
		checkTemplate(d, at.key(r.Pos, "topic"), ruleName(KindIngress, r.Name), "topic", r.Topic.segs, b)
	}
	watch := bindings{"device": SegCapture, "path": SegRest}
	for _, r := range s.Observe {
		checkTemplate(d, at.key(r.Pos, "topic"), ruleName(KindObserve, r.Name), "topic", r.Topic.segs, watch)
	}
	for _, r := range s.Poll {
		checkTemplate(d, at.key(r.Pos, "topic"), ruleName(KindPoll, r.Name), "topic", r.Topic.segs, watch)
	}
	for _, r := range s.Commands {
		b := bindingsOf(r.Filter)
		what := ruleName(KindCommand, r.Name)
		checkTemplate(d, at.key(r.Pos, "url"), what, "url", r.URL.captures(), b)
		checkTemplate(d, at.key(r.Pos, "response_topic"), what, "response_topic", r.ResponseTopic.segs, b)
	}
	for _, r := range s.Resources {
		b := bindingsOf(r.Path)
		if _, ok := b["identity"]; !ok {
			b["identity"] = SegCapture
		}
		checkTemplate(d, at.key(r.Pos, "topic"), ruleName(KindResource, r.Name), "topic", r.Topic.segs, b)
	}
}

// checkWatches reports a device listed twice in one rule. Several rules may
// feed from the same device resource: the bridge shares one observation (or
// one poll loop) among them and publishes for each rule.
func checkWatches(s *Set, d *diags) {
	add := func(what string, pos Pos, devs []string) {
		seen := map[string]bool{}
		for _, dn := range devs {
			if seen[dn] {
				d.addf(pos, "%s: device %q listed twice", what, dn)
			}
			seen[dn] = true
		}
	}
	for _, r := range s.Observe {
		add(ruleName(KindObserve, r.Name), r.Pos, r.Devices)
	}
	for _, r := range s.Poll {
		add(ruleName(KindPoll, r.Name), r.Pos, r.Devices)
	}
}

func intersects(a, b []message.Code) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// buildRoutes indexes ingress, resource and reverse proxy paths, reporting pairs that
// overlap for a common method without one being more specific.
func buildRoutes(s *Set, d *diags) {
	s.routes = NewIndex[*Route](PathSyntax)
	var all []*Route
	for _, r := range s.Ingress {
		all = append(all, &Route{Ingress: r})
	}
	for _, r := range s.Resources {
		all = append(all, &Route{Resource: r})
	}
	for _, r := range s.Proxies {
		all = append(all, &Route{Proxy: r})
	}
	for _, r := range all {
		p := r.Path()
		if p.IsZero() {
			continue
		}
		var clash []*Route
		s.routes.Overlapping(p, func(q Pattern, o *Route) bool {
			if intersects(r.methods(), o.methods()) && Ambiguous(p, q) {
				clash = append(clash, o)
			}
			return len(clash) < maxPairs && !d.full()
		})
		sortByPos(clash, (*Route).pos)
		for _, o := range clash {
			d.addf(r.pos(), "%s: path %q overlaps path %q of %s at %s, and neither is more specific", r.describe(), p, o.Path(), o.describe(), o.pos())
		}
		s.routes.Add(p, r)
	}
}

// buildCommands indexes command filters, reporting ambiguous pairs.
func buildCommands(s *Set, d *diags) {
	s.commands = NewIndex[*Command](TopicSyntax)
	for _, c := range s.Commands {
		if c.Filter.IsZero() {
			continue
		}
		var clash []*Command
		s.commands.Overlapping(c.Filter, func(q Pattern, o *Command) bool {
			if Ambiguous(c.Filter, q) {
				clash = append(clash, o)
			}
			return len(clash) < maxPairs && !d.full()
		})
		sortByPos(clash, func(o *Command) Pos { return o.Pos })
		for _, o := range clash {
			d.addf(c.Pos, "%s: filter %q overlaps filter %q of %s at %s, and neither is more specific", ruleName(KindCommand, c.Name), c.Filter, o.Filter, ruleName(KindCommand, o.Name), o.Pos)
		}
		s.commands.Add(c.Filter, c)
	}
}

// checkLoops reports output topics a command filter can match: the bridge
// would feed its own publishes back to devices.
func checkLoops(s *Set, d *diags) {
	check := func(what string, pos Pos, topic Pattern) {
		if topic.IsZero() {
			return
		}
		var hits []*Command
		s.commands.Overlapping(topic, func(_ Pattern, c *Command) bool {
			hits = append(hits, c)
			return len(hits) < maxPairs && !d.full()
		})
		sortByPos(hits, func(o *Command) Pos { return o.Pos })
		for _, c := range hits {
			d.addf(pos, "%s: topic %q can be matched by filter %q of %s at %s: a feedback loop", what, topic, c.Filter, ruleName(KindCommand, c.Name), c.Pos)
		}
	}
	for _, r := range s.Ingress {
		check(ruleName(KindIngress, r.Name), r.Pos, r.Topic)
	}
	for _, r := range s.Observe {
		check(ruleName(KindObserve, r.Name), r.Pos, r.Topic)
	}
	for _, r := range s.Poll {
		check(ruleName(KindPoll, r.Name), r.Pos, r.Topic)
	}
	for _, c := range s.Commands {
		check(ruleName(KindCommand, c.Name)+" response_topic", c.Pos, c.ResponseTopic)
	}
}

func sortByPos[T any](list []T, pos func(T) Pos) {
	sort.SliceStable(list, func(i, j int) bool {
		a, b := pos(list[i]), pos(list[j])
		if a.File != b.File {
			return strings.Compare(a.File, b.File) < 0
		}
		return a.Line < b.Line
	})
}
