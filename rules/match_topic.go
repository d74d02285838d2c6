package rules

import "strings"

// MatchTopic matches an MQTT topic name against p used as a filter and, on a
// match, appends p's captures to dst. A capture matches one level and a
// trailing {name...} the rest (MQTT '+' and '#'); a pattern starting with a
// capture does not match a topic starting with '$' [MQTT-4.7.2-1].
func (p Pattern) MatchTopic(topic string, dst Captures) (Captures, bool) {
	if strings.HasPrefix(topic, "$") && p.wildFirst() {
		return dst, false
	}
	rest, more := topic, true
	for _, s := range p.segs {
		if s.Kind == SegRest {
			if !more { // '#' also matches the parent level [MQTT-4.7.1-2]
				rest = ""
			}
			return append(dst, Capture{Name: s.Text, Value: rest}), true
		}
		if !more {
			return dst, false
		}
		level := rest
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			level, rest = rest[:j], rest[j+1:]
		} else {
			rest, more = "", false
		}
		switch s.Kind {
		case SegLiteral:
			if level != s.Text {
				return dst, false
			}
		case SegCapture:
			dst = append(dst, Capture{Name: s.Text, Value: level})
		}
	}
	return dst, !more
}

// ResourceMatch is a resource rule whose topic matched an MQTT topic.
type ResourceMatch struct {
	Rule     *Resource
	Captures Captures
}

// MatchResources returns every resource rule whose topic matches an MQTT
// topic, with the captures, so the bridge can tell the observers of each
// rule's rendered path.
func (s *Set) MatchResources(topic string) []ResourceMatch {
	var out []ResourceMatch
	for _, r := range s.Resources {
		if caps, ok := r.Topic.MatchTopic(topic, nil); ok {
			out = append(out, ResourceMatch{Rule: r, Captures: caps})
		}
	}
	return out
}
