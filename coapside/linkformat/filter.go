package linkformat

import (
	"fmt"
	"strings"
)

// Filter is one discovery query (RFC 6690 §4.1):
//
//	filter-query = resource-param "=" query-pattern
//	query-pattern = search-token [ "*" ]
//
// A trailing "*" makes the pattern a prefix match. The resource-param "href"
// matches the link target; any other name matches the link parameter of that
// name. As an extension, a query without "=" (such as "obs") matches links
// that carry the parameter at all.
type Filter struct {
	// Name is the attribute to test, or "href" for the link target.
	Name string
	// Pattern is the value to compare, without the trailing "*".
	Pattern string
	// Prefix is true when the query ended in "*".
	Prefix bool
	// Presence is true for a query without "=": only the presence of the
	// parameter is tested.
	Presence bool
}

// ParseFilter parses one query such as "rt=temperature", "href=/sensors/*"
// or "obs". Percent-decoding is the caller's job: CoAP delivers each Uri-Query
// option already decoded (RFC 7252 §6.5).
func ParseFilter(q string) (Filter, error) {
	name, pattern, hasEq := strings.Cut(q, "=")
	if name == "" {
		return Filter{}, fmt.Errorf("%w: missing attribute name in %q", ErrBadQuery, q)
	}
	for i := 0; i < len(name); i++ {
		if !isNameByte(name[i]) || name[i] == '*' {
			return Filter{}, fmt.Errorf("%w: byte %q in attribute name %q", ErrBadQuery, name[i], name)
		}
	}
	if !hasEq {
		return Filter{Name: name, Presence: true}, nil
	}
	f := Filter{Name: name}
	if strings.HasSuffix(pattern, "*") {
		f.Prefix = true
		pattern = pattern[:len(pattern)-1]
	}
	// RFC 6690 §4.1: "*" is not a search-char, so it may only end the pattern.
	if strings.IndexByte(pattern, '*') >= 0 {
		return Filter{}, fmt.Errorf("%w: '*' allowed only at the end of %q", ErrBadQuery, q)
	}
	f.Pattern = pattern
	return f, nil
}

// ParseFilters parses every Uri-Query value of a discovery request. Several
// filters must all match (RFC 6690 §4.1 defines one; servers commonly AND
// several).
func ParseFilters(queries []string) ([]Filter, error) {
	if len(queries) == 0 {
		return nil, nil
	}
	fs := make([]Filter, 0, len(queries))
	for _, q := range queries {
		f, err := ParseFilter(q)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// String returns the filter in query form.
func (f Filter) String() string {
	if f.Presence {
		return f.Name
	}
	if f.Prefix {
		return f.Name + "=" + f.Pattern + "*"
	}
	return f.Name + "=" + f.Pattern
}

// Match reports whether l satisfies the filter. For attributes holding
// several space-separated values (rt, if, rel, ct="40 41"), the filter
// matches when the whole value or any single value matches.
func (f Filter) Match(l Link) bool {
	if strings.EqualFold(f.Name, "href") && !f.Presence {
		return f.matchValue(l.Target)
	}
	for _, p := range l.Params {
		if !strings.EqualFold(p.Name, f.Name) {
			continue
		}
		if f.Presence {
			return true
		}
		if !p.HasValue {
			// A value-less parameter matches only the bare "name=*".
			if f.Prefix && f.Pattern == "" {
				return true
			}
			continue
		}
		if f.matchValue(p.Value) {
			return true
		}
		for _, v := range splitValues(p.Value) {
			if f.matchValue(v) {
				return true
			}
		}
	}
	return false
}

func (f Filter) matchValue(v string) bool {
	if f.Prefix {
		return strings.HasPrefix(v, f.Pattern)
	}
	return v == f.Pattern
}

// MatchAll reports whether l satisfies every filter. No filters match all.
func MatchAll(l Link, filters []Filter) bool {
	for _, f := range filters {
		if !f.Match(l) {
			return false
		}
	}
	return true
}

// Select returns the links that satisfy every filter, in their original
// order. The result shares no backing array with links.
func Select(links []Link, filters []Filter) []Link {
	var out []Link
	for _, l := range links {
		if MatchAll(l, filters) {
			out = append(out, l)
		}
	}
	return out
}
