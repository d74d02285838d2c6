package rules

import (
	"fmt"
	"strings"
)

// SegKind tells what a pattern segment matches.
type SegKind uint8

// Segment kinds.
const (
	// SegLiteral matches exactly its text.
	SegLiteral SegKind = iota
	// SegCapture ({name}) matches any one segment and binds it.
	SegCapture
	// SegRest ({name...}) matches one or more remaining segments; it is
	// always last.
	SegRest
)

// Segment is one path segment or topic level of a Pattern.
type Segment struct {
	Kind SegKind
	// Text is the literal text, or the capture name.
	Text string
}

// Syntax selects how a pattern string is split and checked.
type Syntax uint8

// Pattern syntaxes.
const (
	// PathSyntax is a CoAP path: "/a/{b}/{c...}"; "/" alone is the root.
	PathSyntax Syntax = iota + 1
	// TopicSyntax is an MQTT topic: "a/{b}/{c...}".
	TopicSyntax
)

// maxPatternLen bounds a pattern or template: 65535 is the MQTT topic limit
// ([MQTT-4.7.3-3]) and well above any CoAP path.
const maxPatternLen = 65535

// Pattern is a parsed path pattern, topic filter or template: literal
// segments and captures. The same value matches (as a filter) and renders (as
// a template).
type Pattern struct {
	raw    string
	syntax Syntax
	segs   []Segment
}

// ParsePath parses a CoAP path pattern such as "/telemetry/{device}/{metric}".
func ParsePath(s string) (Pattern, error) { return parsePattern(s, PathSyntax) }

// ParseTopic parses an MQTT topic pattern such as "sensors/{device}/{rest...}".
func ParseTopic(s string) (Pattern, error) { return parsePattern(s, TopicSyntax) }

func parsePattern(s string, syn Syntax) (Pattern, error) {
	p := Pattern{raw: s, syntax: syn}
	if len(s) > maxPatternLen {
		return p, fmt.Errorf("%w: longer than %d bytes", ErrPattern, maxPatternLen)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return p, fmt.Errorf("%w: contains a NUL byte", ErrPattern)
	}
	body := s
	switch syn {
	case PathSyntax:
		if !strings.HasPrefix(s, "/") {
			return p, fmt.Errorf("%w: path must start with '/'", ErrPattern)
		}
		body = s[1:]
		if body == "" {
			return p, nil
		}
	case TopicSyntax:
		if s == "" {
			return p, fmt.Errorf("%w: empty topic", ErrPattern)
		}
	}
	parts := strings.Split(body, "/")
	seen := make(map[string]bool, 4)
	for i, part := range parts {
		seg, err := parseSegment(part, syn)
		if err != nil {
			return p, fmt.Errorf("%w (segment %d %q)", err, i+1, clip(part))
		}
		if seg.Kind != SegLiteral {
			if seen[seg.Text] {
				return p, fmt.Errorf("%w: capture {%s} used twice", ErrPattern, seg.Text)
			}
			seen[seg.Text] = true
			if seg.Kind == SegRest && i != len(parts)-1 {
				return p, fmt.Errorf("%w: {%s...} must be the last segment", ErrPattern, seg.Text)
			}
		}
		p.segs = append(p.segs, seg)
	}
	return p, nil
}

func parseSegment(part string, syn Syntax) (Segment, error) {
	if part == "" {
		if syn == PathSyntax {
			return Segment{}, fmt.Errorf("%w: empty path segment", ErrPattern)
		}
		return Segment{}, fmt.Errorf("%w: empty topic level", ErrPattern)
	}
	if strings.HasPrefix(part, "{") && strings.HasSuffix(part, "}") {
		name := part[1 : len(part)-1]
		kind := SegCapture
		if n, ok := strings.CutSuffix(name, "..."); ok {
			name, kind = n, SegRest
		}
		if !validName(name) {
			return Segment{}, fmt.Errorf("%w: bad capture name %q (letters, digits and '_', not starting with a digit)", ErrPattern, clip(name))
		}
		return Segment{Kind: kind, Text: name}, nil
	}
	if strings.ContainsAny(part, "{}") {
		return Segment{}, fmt.Errorf("%w: a capture must be a whole segment", ErrPattern)
	}
	if syn == TopicSyntax && strings.ContainsAny(part, "+#") {
		// [MQTT-4.7.1-1] wildcards are not literal characters; captures
		// are the only way to match many topics.
		return Segment{}, fmt.Errorf("%w: literal '+' or '#' in a topic; use {name} or {name...}", ErrPattern)
	}
	if syn == PathSyntax && (part == "." || part == "..") {
		// RFC 3986 §5.2.4: dot segments are removed, never sent as Uri-Path.
		return Segment{}, fmt.Errorf("%w: dot segment in a path", ErrPattern)
	}
	return Segment{Kind: SegLiteral, Text: part}, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.raw }

// Segments returns the parsed segments. The slice must not be modified.
func (p Pattern) Segments() []Segment { return p.segs }

// IsZero reports whether the pattern was never set.
func (p Pattern) IsZero() bool { return p.syntax == 0 }

// Captures lists the capture names in order.
func (p Pattern) Captures() []string {
	var out []string
	for _, s := range p.segs {
		if s.Kind != SegLiteral {
			out = append(out, s.Text)
		}
	}
	return out
}

// Has reports whether the pattern binds the capture name.
func (p Pattern) Has(name string) bool {
	for _, s := range p.segs {
		if s.Kind != SegLiteral && s.Text == name {
			return true
		}
	}
	return false
}

// Filter returns the MQTT subscription filter equivalent to a topic pattern:
// {x} becomes '+' and {x...} becomes '#' ([MQTT-4.7.1-2], [MQTT-4.7.1-3]).
func (p Pattern) Filter() string {
	var b strings.Builder
	for i, s := range p.segs {
		if i > 0 {
			b.WriteByte('/')
		}
		switch s.Kind {
		case SegLiteral:
			b.WriteString(s.Text)
		case SegCapture:
			b.WriteByte('+')
		case SegRest:
			b.WriteByte('#')
		}
	}
	return b.String()
}

// wildFirst reports whether the first segment is a capture; such a filter
// does not match topics starting with '$' ([MQTT-4.7.2-1]).
func (p Pattern) wildFirst() bool {
	return len(p.segs) > 0 && p.segs[0].Kind != SegLiteral
}

// dollarFirst reports whether the first segment is a literal starting '$'.
func (p Pattern) dollarFirst() bool {
	return len(p.segs) > 0 && p.segs[0].Kind == SegLiteral && strings.HasPrefix(p.segs[0].Text, "$")
}

// Overlaps reports whether some concrete path or topic matches both p and q.
// For topics, a filter starting with a capture never matches a '$' topic.
func Overlaps(p, q Pattern) bool {
	if p.syntax == TopicSyntax && (p.wildFirst() && q.dollarFirst() || q.wildFirst() && p.dollarFirst()) {
		return false
	}
	return overlapSegs(p.segs, q.segs)
}

func overlapSegs(a, b []Segment) bool {
	for {
		switch {
		case len(a) == 0 || len(b) == 0:
			return len(a) == len(b)
		case a[0].Kind == SegRest || b[0].Kind == SegRest:
			return true // the other side has at least one segment left
		case a[0].Kind == SegLiteral && b[0].Kind == SegLiteral && a[0].Text != b[0].Text:
			return false
		}
		a, b = a[1:], b[1:]
	}
}

// within reports whether every concrete path matching p also matches q.
func within(p, q Pattern) bool {
	// A '$' topic matched by p's literal first level is not matched by a
	// filter starting with a capture ([MQTT-4.7.2-1]).
	if p.syntax == TopicSyntax && q.wildFirst() && p.dollarFirst() {
		return false
	}
	return withinSegs(p.segs, q.segs)
}

func withinSegs(a, b []Segment) bool {
	for {
		switch {
		case len(a) == 0 || len(b) == 0:
			return len(a) == len(b)
		case b[0].Kind == SegRest:
			return true
		case a[0].Kind == SegRest:
			return false
		case b[0].Kind == SegLiteral && (a[0].Kind != SegLiteral || a[0].Text != b[0].Text):
			return false
		}
		a, b = a[1:], b[1:]
	}
}

// Ambiguous reports whether p and q overlap without one being strictly more
// specific than the other, so no match order could pick between them.
func Ambiguous(p, q Pattern) bool {
	if !Overlaps(p, q) {
		return false
	}
	pq, qp := within(p, q), within(q, p)
	return pq == qp
}
