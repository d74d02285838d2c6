package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"/telemetry/{device}/{metric}", "cmd/{device}/{resource...}", "/", "a/+/#", "/{a...}/b", "{x}", "/{a}{b}", "$SYS/{x}", "/a/../b", "{\x00}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, syn := range []Syntax{PathSyntax, TopicSyntax} {
			p, err := parsePattern(s, syn)
			if err != nil {
				if !errors.Is(err, ErrPattern) {
					t.Fatalf("error %v does not wrap ErrPattern", err)
				}
				continue
			}
			if p.String() != s {
				t.Fatalf("String() = %q, want %q", p.String(), s)
			}
			for i, seg := range p.segs {
				if seg.Kind == SegRest && i != len(p.segs)-1 {
					t.Fatalf("%q: rest capture not last", s)
				}
				if seg.Kind == SegLiteral && (seg.Text == "" || strings.ContainsAny(seg.Text, "/\x00{}")) {
					t.Fatalf("%q: bad literal %q", s, seg.Text)
				}
			}
			if syn == TopicSyntax {
				f := p.Filter()
				if n := strings.Count(f, "/") + 1; n != len(p.segs) {
					t.Fatalf("%q: filter %q has %d levels, pattern %d", s, f, n, len(p.segs))
				}
				if i := strings.IndexByte(f, '#'); i >= 0 && i != len(f)-1 {
					t.Fatalf("%q: filter %q has '#' before the end", s, f)
				}
			}
		}
	})
}

// mqttMatch is a reference implementation of MQTT topic filter matching
// ([MQTT-4.7]) over filter strings, independent of the trie.
func mqttMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		switch {
		case f == "#":
			// The trie's {x...} needs at least one level, unlike '#',
			// which also matches the parent level.
			return len(tl) > i
		case i >= len(tl):
			return false
		case f != "+" && f != tl[i]:
			return false
		}
	}
	return len(fl) == len(tl)
}

func FuzzMatchTopic(f *testing.F) {
	f.Add("cmd/{device}/{resource...}", "cmd/gh1/led/red")
	f.Add("{x}/set", "$SYS/set")
	f.Add("{all...}", "a")
	f.Add("a/{b}", "a/")
	f.Add("$SYS/{x}", "$SYS/load")
	f.Add("a/b", "a/b/c")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		p, err := ParseTopic(filter)
		if err != nil {
			return
		}
		ix := NewIndex[int](TopicSyntax)
		ix.Add(p, 1)
		_, caps, ok := ix.MatchTopic(topic, nil, nil)
		if want := mqttMatch(p.Filter(), topic); ok != want {
			t.Fatalf("filter %q topic %q: trie %v, reference %v", filter, topic, ok, want)
		}
		if !ok {
			return
		}
		// Rendering the filter as a template with its own captures gives
		// the topic back, unless a captured level cannot be rendered.
		out, err := p.Render(caps)
		if err != nil {
			if !errors.Is(err, ErrEscape) {
				t.Fatalf("render: %v", err)
			}
			return
		}
		if out != topic {
			t.Fatalf("filter %q topic %q: captures %v render %q", filter, topic, caps, out)
		}
	})
}

// FuzzRender checks the template property: a rendered topic never has a
// level the template did not have. Each literal level comes out unchanged in
// place, each {x} yields exactly one level, and no level is empty, a
// wildcard, or contains NUL.
func FuzzRender(f *testing.F) {
	f.Add("sensors/{device}/{metric}", "gh1", "temp")
	f.Add("sensors/{device}/{metric}", "a/b", "+")
	f.Add("g/{device}/{path...}", "..", "x/../y")
	f.Add("g/{device}/{path...}", "d", "x//y")
	f.Add("{a}/{b...}", "\x00", "#")
	f.Fuzz(func(t *testing.T, tmpl, v1, v2 string) {
		p, err := ParseTopic(tmpl)
		if err != nil {
			return
		}
		var caps Captures
		vals := []string{v1, v2}
		for i, name := range p.Captures() {
			caps = append(caps, Capture{Name: name, Value: vals[i%2]})
		}
		out, err := p.Render(caps)
		if err != nil {
			if !errors.Is(err, ErrEscape) {
				t.Fatalf("render %q: %v", tmpl, err)
			}
			return
		}
		levels := strings.Split(out, "/")
		for _, l := range levels {
			if l == "" || strings.ContainsAny(l, "+#\x00") {
				t.Fatalf("%q rendered %q with bad level %q", tmpl, out, l)
			}
		}
		for i, s := range p.segs {
			if i >= len(levels) {
				t.Fatalf("%q rendered %q: too few levels", tmpl, out)
			}
			switch s.Kind {
			case SegLiteral:
				if levels[i] != s.Text {
					t.Fatalf("%q rendered %q: level %d is %q", tmpl, out, i, levels[i])
				}
			case SegCapture:
				if levels[i] == "." || levels[i] == ".." {
					t.Fatalf("%q rendered %q: dot level", tmpl, out)
				}
			case SegRest:
				return
			}
		}
		if len(levels) != len(p.segs) {
			t.Fatalf("%q rendered %q: %d levels, template has %d", tmpl, out, len(levels), len(p.segs))
		}
	})
}

// FuzzLoad feeds arbitrary bytes to the loader: it must return a result or
// an Errors value, never panic.
func FuzzLoad(f *testing.F) {
	for _, dir := range []string{"testdata/good", "testdata/bad"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.toml"))
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte("[[ingress]]\nmethods = [[[[[[\"POST\"]]]]]]\n"))
	f.Add([]byte("[a.b.c.d.e.f.g.h]\nx = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(Source{Name: "fuzz.toml", Data: data})
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %T %v is not a non-empty Errors", err, err)
			}
			for _, e := range es {
				if e.File != "fuzz.toml" || e.Msg == "" || strings.Contains(e.Msg, "\n") {
					t.Fatalf("bad entry %q", e.Error())
				}
			}
			return
		}
		if s == nil {
			t.Fatal("nil set without error")
		}
	})
}
