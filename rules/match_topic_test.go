package rules

import "testing"

func TestPatternMatchTopic(t *testing.T) {
	tests := []struct {
		pattern, topic string
		ok             bool
		caps           string
	}{
		{"config/{device}", "config/d1", true, "device=d1"},
		{"config/{device}", "config/d1/x", false, ""},
		{"config/{device}", "config", false, ""},
		{"config/{device}", "other/d1", false, ""},
		{"a/{x}/c/{rest...}", "a/1/c/d/e", true, "x=1 rest=d/e"},
		{"a/{rest...}", "a", true, "rest="},
		{"a/{rest...}", "a/", true, "rest="},
		{"{x}/status", "$SYS/status", false, ""},
		{"$SYS/{x}", "$SYS/uptime", true, "x=uptime"},
		{"a/{x}", "a/", true, "x="},
	}
	for _, tt := range tests {
		p, err := ParseTopic(tt.pattern)
		if err != nil {
			t.Fatalf("%s: %v", tt.pattern, err)
		}
		caps, ok := p.MatchTopic(tt.topic, nil)
		if ok != tt.ok {
			t.Errorf("%s ~ %s: ok %v, want %v", tt.pattern, tt.topic, ok, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		got := ""
		for i, c := range caps {
			if i > 0 {
				got += " "
			}
			got += c.Name + "=" + c.Value
		}
		if got != tt.caps {
			t.Errorf("%s ~ %s: captures %q, want %q", tt.pattern, tt.topic, got, tt.caps)
		}
	}
}

func FuzzPatternMatchTopic(f *testing.F) {
	f.Add("a/{x}/{rest...}", "a/b/c/d")
	f.Add("{x}", "$SYS")
	f.Fuzz(func(t *testing.T, pattern, topic string) {
		p, err := ParseTopic(pattern)
		if err != nil {
			return
		}
		caps, ok := p.MatchTopic(topic, nil)
		if !ok {
			return
		}
		// Rendering the captures back must give the topic again.
		got, err := p.Render(caps)
		if err == nil && got != topic {
			t.Fatalf("%q ~ %q: render gives %q", pattern, topic, got)
		}
	})
}
