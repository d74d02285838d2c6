package rules

import (
	"fmt"
	"strings"
)

// Capture is one name bound by matching a pattern.
type Capture struct {
	Name  string
	Value string
}

// Captures holds the names a match bound, in pattern order. A slice keeps
// matching free of map allocations; rules bind a handful of names.
type Captures []Capture

// Get returns the value bound to name.
func (c Captures) Get(name string) (string, bool) {
	for _, x := range c {
		if x.Name == name {
			return x.Value, true
		}
	}
	return "", false
}

// With returns c with name bound to value, replacing an earlier binding.
func (c Captures) With(name, value string) Captures {
	for i := range c {
		if c[i].Name == name {
			out := append(Captures(nil), c...)
			out[i].Value = value
			return out
		}
	}
	return append(c[:len(c):len(c)], Capture{Name: name, Value: value})
}

// Map copies the bindings into a map (for expressions and logs).
func (c Captures) Map() map[string]string {
	m := make(map[string]string, len(c))
	for _, x := range c {
		m[x.Name] = x.Value
	}
	return m
}

// CheckSegment reports, wrapping ErrEscape, whether v cannot stand as one
// path segment or topic level: it is empty, "." or "..", or contains '/',
// '+', '#' or NUL. A value that passes cannot add, remove or widen a level.
func CheckSegment(v string) error {
	switch v {
	case "":
		return fmt.Errorf("%w: empty value", ErrEscape)
	case ".", "..":
		return fmt.Errorf("%w: dot segment %q", ErrEscape, v)
	}
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '/', '+', '#', 0:
			return fmt.Errorf("%w: %q contains %q", ErrEscape, clip(v), v[i])
		}
	}
	return nil
}

// checkRest checks a value bound to {name...}: one or more '/'-separated
// segments, each passing CheckSegment.
func checkRest(v string) error {
	for {
		i := strings.IndexByte(v, '/')
		if i < 0 {
			return CheckSegment(v)
		}
		if err := CheckSegment(v[:i]); err != nil {
			return err
		}
		v = v[i+1:]
	}
}

// Render fills the pattern's captures from c and returns the topic, or the
// path with its leading '/'. Every captured value is checked: a value that
// would escape its segment fails with ErrEscape, a capture missing from c with
// ErrMissingCapture.
func (p Pattern) Render(c Captures) (string, error) {
	b, err := p.AppendRender(make([]byte, 0, len(p.raw)+16), c)
	return string(b), err
}

// AppendRender is Render appending to dst.
func (p Pattern) AppendRender(dst []byte, c Captures) ([]byte, error) {
	if p.syntax == PathSyntax && len(p.segs) == 0 {
		return append(dst, '/'), nil
	}
	for i, s := range p.segs {
		if i > 0 || p.syntax == PathSyntax {
			dst = append(dst, '/')
		}
		if s.Kind == SegLiteral {
			dst = append(dst, s.Text...)
			continue
		}
		v, ok := c.Get(s.Text)
		if !ok {
			return dst, missingCapture(s.Text)
		}
		var err error
		if s.Kind == SegRest {
			err = checkRest(v)
		} else {
			err = CheckSegment(v)
		}
		if err != nil {
			return dst, fmt.Errorf("{%s}: %w", s.Text, err)
		}
		dst = append(dst, v...)
	}
	return dst, nil
}

// RenderSegments renders a path pattern as CoAP Uri-Path option values
// (RFC 7252 §6.4: one option per segment, no leading '/').
func (p Pattern) RenderSegments(c Captures) ([]string, error) {
	out := make([]string, 0, len(p.segs)+2)
	for _, s := range p.segs {
		if s.Kind == SegLiteral {
			out = append(out, s.Text)
			continue
		}
		v, ok := c.Get(s.Text)
		if !ok {
			return nil, missingCapture(s.Text)
		}
		if s.Kind == SegCapture {
			if err := CheckSegment(v); err != nil {
				return nil, fmt.Errorf("{%s}: %w", s.Text, err)
			}
			out = append(out, v)
			continue
		}
		if err := checkRest(v); err != nil {
			return nil, fmt.Errorf("{%s}: %w", s.Text, err)
		}
		out = append(out, strings.Split(v, "/")...)
	}
	return out, nil
}

// checkCaptured checks every path segment the pattern binds to a capture
// with CheckSegment. For {name...} this must be done segment by segment:
// joined with '/', the one segment "a/b" would read as the two segments
// "a" and "b" and publish to the same topic.
func (p Pattern) checkCaptured(segs []string) error {
	for i, s := range p.segs {
		if s.Kind == SegLiteral || i >= len(segs) {
			continue
		}
		bound := segs[i : i+1]
		if s.Kind == SegRest {
			bound = segs[i:]
		}
		for j, v := range bound {
			if err := CheckSegment(v); err != nil {
				return fmt.Errorf("{%s}: path segment %d: %w", s.Text, i+j+1, err)
			}
		}
	}
	return nil
}

// extract binds the pattern's captures against concrete segments the pattern
// is known to match, appending to dst.
func (p Pattern) extract(segs []string, dst Captures) Captures {
	for i, s := range p.segs {
		switch s.Kind {
		case SegCapture:
			dst = append(dst, Capture{Name: s.Text, Value: segs[i]})
		case SegRest:
			dst = append(dst, Capture{Name: s.Text, Value: strings.Join(segs[i:], "/")})
		}
	}
	return dst
}

// extractTopic binds captures against a topic string the pattern is known to
// match, without splitting it.
func (p Pattern) extractTopic(topic string, dst Captures) Captures {
	rest := topic
	for _, s := range p.segs {
		if s.Kind == SegRest {
			return append(dst, Capture{Name: s.Text, Value: rest})
		}
		level := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			level, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		if s.Kind == SegCapture {
			dst = append(dst, Capture{Name: s.Text, Value: level})
		}
	}
	return dst
}

// missingCapture is the error of a template naming a capture not supplied;
// {identity} is missing for a client that did not authenticate.
func missingCapture(name string) error {
	if name == "identity" {
		return noIdentity{}
	}
	return fmt.Errorf("%w: {%s}", ErrMissingCapture, name)
}

// noIdentity is ErrNoIdentity, which is also ErrMissingCapture, saying
// only the first.
type noIdentity struct{}

func (noIdentity) Error() string { return ErrNoIdentity.Error() }

// Is matches ErrNoIdentity and ErrMissingCapture.
func (noIdentity) Is(target error) bool {
	return target == ErrNoIdentity || target == ErrMissingCapture
}
