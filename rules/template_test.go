package rules

import (
	"errors"
	"slices"
	"testing"
)

func TestRender(t *testing.T) {
	tests := []struct {
		tmpl string
		syn  Syntax
		caps Captures
		want string
		err  error
	}{
		{"sensors/{device}/{metric}", TopicSyntax, Captures{{"device", "gh1"}, {"metric", "temp"}}, "sensors/gh1/temp", nil},
		{"greenhouse/{device}/{path...}", TopicSyntax, Captures{{"device", "gh1"}, {"path", "sensors/temp"}}, "greenhouse/gh1/sensors/temp", nil},
		{"/fw/{rest...}", PathSyntax, Captures{{"rest", "a/b/c"}}, "/fw/a/b/c", nil},
		{"/", PathSyntax, nil, "/", nil},
		{"sensors/{device}", TopicSyntax, Captures{{"device", "a/b"}}, "", ErrEscape},
		{"sensors/{device}", TopicSyntax, Captures{{"device", "+"}}, "", ErrEscape},
		{"sensors/{device}", TopicSyntax, Captures{{"device", "x#"}}, "", ErrEscape},
		{"sensors/{device}", TopicSyntax, Captures{{"device", ".."}}, "", ErrEscape},
		{"sensors/{device}", TopicSyntax, Captures{{"device", "."}}, "", ErrEscape},
		{"sensors/{device}", TopicSyntax, Captures{{"device", "a\x00"}}, "", ErrEscape},
		{"sensors/{device}", TopicSyntax, Captures{{"device", ""}}, "", ErrEscape},
		{"/d/{device}", PathSyntax, Captures{{"device", "../admin"}}, "", ErrEscape},
		{"a/{rest...}", TopicSyntax, Captures{{"rest", "x//y"}}, "", ErrEscape},
		{"a/{rest...}", TopicSyntax, Captures{{"rest", "x/../y"}}, "", ErrEscape},
		{"a/{rest...}", TopicSyntax, Captures{{"rest", "x/"}}, "", ErrEscape},
		{"a/{rest...}", TopicSyntax, Captures{{"rest", "#"}}, "", ErrEscape},
		{"a/{x}", TopicSyntax, nil, "", ErrMissingCapture},
	}
	for _, tc := range tests {
		p, err := parsePattern(tc.tmpl, tc.syn)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Render(tc.caps)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Render(%s, %v) err = %v, want %v", tc.tmpl, tc.caps, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Render(%s, %v) = %q, %v; want %q", tc.tmpl, tc.caps, got, err, tc.want)
		}
	}
}

func TestRenderSegments(t *testing.T) {
	p, _ := ParsePath("/fw/{dev}/{rest...}")
	got, err := p.RenderSegments(Captures{{"dev", "d1"}, {"rest", "a/b"}})
	if err != nil || !slices.Equal(got, []string{"fw", "d1", "a", "b"}) {
		t.Fatalf("RenderSegments = %q, %v", got, err)
	}
	if _, err := p.RenderSegments(Captures{{"dev", "d/1"}, {"rest", "a"}}); !errors.Is(err, ErrEscape) {
		t.Fatalf("escaping value: err = %v", err)
	}
}

func TestCapturesWith(t *testing.T) {
	c := Captures{{"a", "1"}}
	d := c.With("a", "2").With("b", "3")
	if v, _ := c.Get("a"); v != "1" {
		t.Errorf("With modified the receiver: a = %q", v)
	}
	if v, _ := d.Get("a"); v != "2" {
		t.Errorf("a = %q", v)
	}
	if m := d.Map(); m["b"] != "3" || len(m) != 2 {
		t.Errorf("Map = %v", m)
	}
}
