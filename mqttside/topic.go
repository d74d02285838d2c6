package mqttside

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxTopicLength is the longest topic name or filter MQTT can carry: the
// length prefix is a 16-bit integer. [MQTT-4.7.3-3]
const MaxTopicLength = 65535

// ValidateTopic checks a topic name for publishing:
//
//   - at least one byte long [MQTT-4.7.3-1] and at most 65535 bytes [MQTT-4.7.3-3];
//   - well-formed UTF-8 [MQTT-1.5.3-1] without U+0000 [MQTT-1.5.3-2];
//   - no wildcard characters '+' or '#' [MQTT-4.7.1-1];
//   - not starting with '$', which is reserved for broker topics such as
//     $SYS (MQTT 3.1.1 §4.7.2).
//
// Empty levels ("a//b", "/a") are legal MQTT; [ValidatePublishTopic] adds
// the bridge's stricter policy.
func ValidateTopic(topic string) error {
	if err := validateString(topic, ErrInvalidTopic); err != nil {
		return err
	}
	if i := strings.IndexAny(topic, "+#"); i >= 0 {
		return fmt.Errorf("%w: %s: wildcard %q not allowed in a topic name [MQTT-4.7.1-1]",
			ErrInvalidTopic, quoteShort(topic), topic[i])
	}
	if topic[0] == '$' {
		return fmt.Errorf("%w: %s: topics starting with '$' are reserved for the broker [MQTT-4.7.2]",
			ErrInvalidTopic, quoteShort(topic))
	}
	return nil
}

// ValidatePublishTopic applies [ValidateTopic] and, unless allowEmptyLevels
// is set, rejects empty topic levels: in the bridge they come from an empty
// template capture and would publish to a topic nobody subscribed to.
func ValidatePublishTopic(topic string, allowEmptyLevels bool) error {
	if err := ValidateTopic(topic); err != nil {
		return err
	}
	if allowEmptyLevels {
		return nil
	}
	if topic[0] == '/' || topic[len(topic)-1] == '/' || strings.Contains(topic, "//") {
		return fmt.Errorf("%w: %s: empty topic level", ErrInvalidTopic, quoteShort(topic))
	}
	return nil
}

// ValidateFilter checks a topic filter for subscribing:
//
//   - length and encoding rules as for topic names [MQTT-4.7.3-1] [MQTT-4.7.3-3] [MQTT-1.5.3-1] [MQTT-1.5.3-2];
//   - '#' only as the last character, alone in its level [MQTT-4.7.1-2];
//   - '+' only as a whole level [MQTT-4.7.1-3];
//   - shared subscriptions "$share/{group}/{filter}" need a non-empty group
//     without wildcards or '/' and a valid filter (MQTT 5 §4.8.2).
func ValidateFilter(filter string) error {
	if err := validateString(filter, ErrInvalidFilter); err != nil {
		return err
	}
	rest := filter
	if strings.HasPrefix(filter, "$share/") {
		group, f, ok := strings.Cut(filter[len("$share/"):], "/")
		if !ok || group == "" || f == "" {
			return fmt.Errorf("%w: %s: shared subscription needs $share/{group}/{filter}",
				ErrInvalidFilter, quoteShort(filter))
		}
		if strings.ContainsAny(group, "+#") {
			return fmt.Errorf("%w: %s: wildcard in share name", ErrInvalidFilter, quoteShort(filter))
		}
		rest = f
	}
	for level, tail := range levels(rest) {
		switch {
		case level == "#":
			if tail {
				return fmt.Errorf("%w: %s: '#' must be the last level [MQTT-4.7.1-2]",
					ErrInvalidFilter, quoteShort(filter))
			}
		case level == "+":
		case strings.ContainsAny(level, "+#"):
			return fmt.Errorf("%w: %s: wildcard must occupy a whole level [MQTT-4.7.1-2] [MQTT-4.7.1-3]",
				ErrInvalidFilter, quoteShort(filter))
		}
	}
	return nil
}

// ValidateQoS checks that qos is 0, 1 or 2 [MQTT-3.3.1-4].
func ValidateQoS(qos byte) error {
	if qos > 2 {
		return fmt.Errorf("%w: %d", ErrInvalidQoS, qos)
	}
	return nil
}

// MatchFilter reports whether topic matches filter. A filter starting with
// a wildcard does not match topics starting with '$' [MQTT-4.7.2-1].
// Neither argument is validated.
func MatchFilter(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a" [MQTT-4.7.1-2].
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// FilterCovers reports whether every topic matched by filter is also
// matched by pattern, i.e. pattern is at least as wide as filter. A topic
// name is a filter without wildcards, so this also answers whether pattern
// matches a topic. Used for ACL patterns, which must cover whole
// subscriptions, not only single topics.
func FilterCovers(pattern, filter string) bool {
	if filter != "" && filter[0] == '$' && pattern != "" && (pattern[0] == '+' || pattern[0] == '#') {
		return false // [MQTT-4.7.2-1]
	}
	for {
		pl, prest, pmore := strings.Cut(pattern, "/")
		if pl == "#" {
			return true
		}
		fl, frest, fmore := strings.Cut(filter, "/")
		switch {
		case fl == "#":
			return false // only '#' covers '#'
		case pl == "+":
		case fl == "+" || pl != fl:
			return false
		}
		if !pmore || !fmore {
			return pmore == fmore || (pmore && prest == "#")
		}
		pattern, filter = prest, frest
	}
}

// validateString applies the rules shared by topic names and filters.
func validateString(s string, kind error) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty [MQTT-4.7.3-1]", kind)
	case len(s) > MaxTopicLength:
		return fmt.Errorf("%w: %d bytes, longer than %d [MQTT-4.7.3-3]", kind, len(s), MaxTopicLength)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s: not valid UTF-8 [MQTT-1.5.3-1]", kind, quoteShort(s))
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w: %s: contains U+0000 [MQTT-1.5.3-2]", kind, quoteShort(s))
	}
	return nil
}

// levels yields each level of a topic or filter and whether more follow.
func levels(s string) func(yield func(string, bool) bool) {
	return func(yield func(string, bool) bool) {
		for {
			l, rest, more := strings.Cut(s, "/")
			if !yield(l, more) || !more {
				return
			}
			s = rest
		}
	}
}

// quoteShort quotes s for an error message, shortened to keep huge inputs
// out of logs.
func quoteShort(s string) string {
	const limit = 64
	if len(s) > limit {
		return fmt.Sprintf("%q…", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}
