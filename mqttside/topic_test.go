package mqttside

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateTopic(t *testing.T) {
	tests := []struct {
		name  string
		topic string
		empty bool // allow empty levels
		want  error
	}{
		{"simple", "sensors/dev1/temp", false, nil},
		{"single level", "a", false, nil},
		{"unicode", "capteurs/salle-à-manger/température", false, nil},
		{"max length", strings.Repeat("a", MaxTopicLength), false, nil},
		{"empty", "", false, ErrInvalidTopic},
		{"too long", strings.Repeat("a", MaxTopicLength+1), false, ErrInvalidTopic},
		{"plus", "a/+/b", false, ErrInvalidTopic},
		{"hash", "a/#", false, ErrInvalidTopic},
		{"plus inside level", "a/b+c", false, ErrInvalidTopic},
		{"nul", "a/\x00/b", false, ErrInvalidTopic},
		{"invalid utf8", "a/\xff\xfe", false, ErrInvalidTopic},
		{"surrogate", "a/\xed\xa0\x80", false, ErrInvalidTopic},
		{"dollar", "$SYS/broker/uptime", false, ErrInvalidTopic},
		{"empty level middle", "a//b", false, ErrInvalidTopic},
		{"leading slash", "/a", false, ErrInvalidTopic},
		{"trailing slash", "a/", false, ErrInvalidTopic},
		{"only slash", "/", false, ErrInvalidTopic},
		{"empty level allowed", "a//b", true, nil},
		{"leading slash allowed", "/a", true, nil},
		{"wildcard even with empty levels allowed", "a//#", true, ErrInvalidTopic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidatePublishTopic(tt.topic, tt.empty)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("ValidatePublishTopic(%q) = %v, want %v", shorten(tt.topic), err, tt.want)
			}
			if err != nil && len(err.Error()) > 300 {
				t.Errorf("error message too long (%d bytes): huge input leaked into it", len(err.Error()))
			}
		})
	}
}

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		filter string
		ok     bool
	}{
		{"a/b", true},
		{"#", true},
		{"+", true},
		{"a/#", true},
		{"a/+/b", true},
		{"+/+/#", true},
		{"/+", true},
		{"a//b", true}, // empty levels are legal in filters
		{"$SYS/#", true},
		{"$share/g/a/+", true},
		{"", false},
		{"a/#/b", false},
		{"a#", false},
		{"a/b#", false},
		{"a+/b", false},
		{"a/+b", false},
		{"##", false},
		{"a/\x00", false},
		{"\xc3\x28", false},
		{strings.Repeat("a", MaxTopicLength+1), false},
		{"$share/", false},
		{"$share/g", false},
		{"$share//a", false},
		{"$share/g+/a", false},
		{"$share/g/a/#/b", false},
	}
	for _, tt := range tests {
		t.Run(shorten(tt.filter), func(t *testing.T) {
			err := ValidateFilter(tt.filter)
			if tt.ok && err != nil {
				t.Fatalf("ValidateFilter(%q) = %v, want nil", tt.filter, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidFilter) {
				t.Fatalf("ValidateFilter(%q) = %v, want ErrInvalidFilter", tt.filter, err)
			}
		})
	}
}

func TestMatchFilter(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"a/#", "a", true}, // [MQTT-4.7.1-2] parent level
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"#", "$SYS/x", false}, // [MQTT-4.7.2-1]
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"+/+", "/a", true},
		{"a//b", "a//b", true},
		{"a/+/c", "a//c", true},
		{"a", "a/b", false},
		{"a/b/c", "a/b", false},
	}
	for _, tt := range tests {
		if got := MatchFilter(tt.filter, tt.topic); got != tt.want {
			t.Errorf("MatchFilter(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

func TestFilterCovers(t *testing.T) {
	tests := []struct {
		pattern, filter string
		want            bool
	}{
		{"#", "a/b", true},
		{"#", "#", true},
		{"a/#", "a/+/c", true},
		{"a/#", "a", true},
		{"a/#", "#", false},
		{"a/+", "a/b", true},
		{"a/+", "a/+", true},
		{"a/+", "a/#", false},
		{"a/b", "a/+", false},
		{"+/b", "x/b", true},
		{"#", "$SYS/x", false},
		{"$SYS/#", "$SYS/broker/#", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
	}
	for _, tt := range tests {
		if got := FilterCovers(tt.pattern, tt.filter); got != tt.want {
			t.Errorf("FilterCovers(%q, %q) = %v, want %v", tt.pattern, tt.filter, got, tt.want)
		}
	}
}

func shorten(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}

// FuzzValidateTopic checks that topic validation never panics, agrees with
// the MQTT rules it claims to enforce, and that a valid topic matches
// itself as a filter.
func FuzzValidateTopic(f *testing.F) {
	for _, s := range []string{"a/b", "", "a/+", "#", "a//b", "\xff", "$SYS/x", "a\x00b", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateTopic(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidTopic) {
				t.Fatalf("error %v does not wrap ErrInvalidTopic", err)
			}
			return
		}
		if s == "" || len(s) > MaxTopicLength || !utf8.ValidString(s) ||
			strings.ContainsAny(s, "+#\x00") || s[0] == '$' {
			t.Fatalf("ValidateTopic(%q) accepted an invalid topic", s)
		}
		if ValidateFilter(s) != nil {
			t.Fatalf("valid topic %q is not a valid filter", s)
		}
		if !MatchFilter(s, s) || !FilterCovers(s, s) || !MatchFilter("#", s) {
			t.Fatalf("valid topic %q does not match itself or #", s)
		}
	})
}

// FuzzValidateFilter checks filter validation and matching never panic,
// and that FilterCovers agrees with MatchFilter on topics.
func FuzzValidateFilter(f *testing.F) {
	for _, s := range [][2]string{{"a/+", "a/b"}, {"#", "x"}, {"a/#/b", "a"}, {"$share/g/#", "a"}, {"+/+", "/"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		ferr := ValidateFilter(filter)
		if ferr != nil && !errors.Is(ferr, ErrInvalidFilter) {
			t.Fatalf("error %v does not wrap ErrInvalidFilter", ferr)
		}
		m := MatchFilter(filter, topic)
		if ferr == nil && ValidateTopic(topic) == nil && !strings.HasPrefix(filter, "$share/") {
			if c := FilterCovers(filter, topic); c != m {
				t.Fatalf("FilterCovers(%q,%q)=%v but MatchFilter=%v", filter, topic, c, m)
			}
		}
	})
}
