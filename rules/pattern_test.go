package rules

import (
	"errors"
	"testing"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in     string
		syn    Syntax
		filter string // for topics; the path joined back for paths
		caps   []string
		err    bool
	}{
		{in: "/", syn: PathSyntax},
		{in: "/a/b", syn: PathSyntax},
		{in: "/telemetry/{device}/{metric}", syn: PathSyntax, caps: []string{"device", "metric"}},
		{in: "/fw/{rest...}", syn: PathSyntax, caps: []string{"rest"}},
		{in: "a", syn: PathSyntax, err: true},
		{in: "/a//b", syn: PathSyntax, err: true},
		{in: "/a/", syn: PathSyntax, err: true},
		{in: "/a/..", syn: PathSyntax, err: true},
		{in: "/a/.", syn: PathSyntax, err: true},
		{in: "/{a...}/b", syn: PathSyntax, err: true},
		{in: "/{a}/{a}", syn: PathSyntax, err: true},
		{in: "/{}", syn: PathSyntax, err: true},
		{in: "/{...}", syn: PathSyntax, err: true},
		{in: "/x{a}", syn: PathSyntax, err: true},
		{in: "/{a}x", syn: PathSyntax, err: true},
		{in: "/{a-b}", syn: PathSyntax, err: true},
		{in: "/a\x00", syn: PathSyntax, err: true},
		{in: "sensors/{device}/{metric}", syn: TopicSyntax, filter: "sensors/+/+", caps: []string{"device", "metric"}},
		{in: "cmd/{device}/{resource...}", syn: TopicSyntax, filter: "cmd/+/#", caps: []string{"device", "resource"}},
		{in: "{all...}", syn: TopicSyntax, filter: "#", caps: []string{"all"}},
		{in: "$SYS/x", syn: TopicSyntax, filter: "$SYS/x"},
		{in: "a/./..", syn: TopicSyntax, filter: "a/./.."},
		{in: "", syn: TopicSyntax, err: true},
		{in: "a/+", syn: TopicSyntax, err: true},
		{in: "a/#", syn: TopicSyntax, err: true},
		{in: "a/b+c", syn: TopicSyntax, err: true},
		{in: "a//b", syn: TopicSyntax, err: true},
		{in: "/a", syn: TopicSyntax, err: true},
		{in: "a/", syn: TopicSyntax, err: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			p, err := parsePattern(tc.in, tc.syn)
			if tc.err {
				if !errors.Is(err, ErrPattern) {
					t.Fatalf("err = %v, want ErrPattern", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.syn == TopicSyntax && p.Filter() != tc.filter {
				t.Errorf("Filter() = %q, want %q", p.Filter(), tc.filter)
			}
			if got := p.Captures(); len(got) != len(tc.caps) {
				t.Errorf("Captures() = %q, want %q", got, tc.caps)
			} else {
				for i := range got {
					if got[i] != tc.caps[i] {
						t.Errorf("Captures() = %q, want %q", got, tc.caps)
					}
				}
			}
		})
	}
}

func TestOverlapAndSpecificity(t *testing.T) {
	tests := []struct {
		a, b      string
		overlap   bool
		ambiguous bool
	}{
		{"/a/b", "/a/b", true, true},
		{"/a/b", "/a/c", false, false},
		{"/a/{x}", "/a/{y}", true, true},
		{"/a/{x}", "/a/b", true, false},
		{"/a/{x}/c", "/a/b/{y}", true, true},
		{"/a/{x...}", "/a/b/c", true, false},
		{"/a/{x...}", "/a", false, false},
		{"/a/{x...}", "/a/{y}", true, false},
		{"/a/{x...}", "/a/{y...}", true, true},
		{"/{x...}", "/a/{y...}", true, false},
		{"/a/{x}/{y...}", "/a/{p...}", true, false},
		{"/a/{x}", "/a/{x}/b", false, false},
		{"/", "/{x...}", false, false},
		{"/", "/", true, true},
	}
	for _, tc := range tests {
		a, err := ParsePath(tc.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParsePath(tc.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := Overlaps(a, b); got != tc.overlap {
			t.Errorf("Overlaps(%s, %s) = %v", tc.a, tc.b, got)
		}
		if got := Overlaps(b, a); got != tc.overlap {
			t.Errorf("Overlaps(%s, %s) = %v (reversed)", tc.b, tc.a, got)
		}
		if got := Ambiguous(a, b); got != tc.ambiguous {
			t.Errorf("Ambiguous(%s, %s) = %v", tc.a, tc.b, got)
		}
	}
}

func TestTopicOverlapDollar(t *testing.T) {
	tests := []struct {
		filter, topic string
		overlap       bool
	}{
		{"{x}/set", "$SYS/set", false},          // [MQTT-4.7.2-1]
		{"{all...}", "$SYS/broker/load", false}, // '#' does not match '$' topics either
		{"$SYS/{x}", "$SYS/set", true},
		{"home/{x...}", "home/$weird", true}, // '$' matters in the first level only
		{"{x}/set", "{d}/set", true},
	}
	for _, tc := range tests {
		f, _ := ParseTopic(tc.filter)
		tp, _ := ParseTopic(tc.topic)
		if got := Overlaps(f, tp); got != tc.overlap {
			t.Errorf("Overlaps(%s, %s) = %v, want %v", tc.filter, tc.topic, got, tc.overlap)
		}
	}
}
