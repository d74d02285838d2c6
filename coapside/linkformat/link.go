package linkformat

import "strings"

// Param is one link parameter (RFC 6690 §2 link-param), for example
// rt="temperature" or the value-less obs.
type Param struct {
	// Name is the parameter name as written; names compare case-insensitively.
	Name string
	// Value is the unquoted, unescaped value. It is empty when HasValue is
	// false.
	Value string
	// HasValue is false for a parameter written without "=", such as obs.
	HasValue bool
}

// Link is one link-value: a target URI reference and its parameters in the
// order they were written.
type Link struct {
	// Target is the URI reference between "<" and ">".
	Target string
	// Params holds the link parameters in document order.
	Params []Param
}

// Param returns the value of the first parameter called name (compared
// case-insensitively) and whether it is present at all. A value-less
// parameter such as obs reports ("", true).
func (l Link) Param(name string) (string, bool) {
	for _, p := range l.Params {
		if strings.EqualFold(p.Name, name) {
			return p.Value, true
		}
	}
	return "", false
}

// Has reports whether the link carries a parameter called name.
func (l Link) Has(name string) bool {
	_, ok := l.Param(name)
	return ok
}

// Values returns every space-separated value of every parameter called
// name. Attributes such as rt, if and rel may hold several values in one
// quoted string (RFC 6690 §3.1–3.3) and may also be repeated.
func (l Link) Values(name string) []string {
	var out []string
	for _, p := range l.Params {
		if !strings.EqualFold(p.Name, name) || !p.HasValue {
			continue
		}
		out = append(out, splitValues(p.Value)...)
	}
	return out
}

// splitValues splits a relation-types style value on runs of spaces
// (RFC 6690 §2: relation-type *( 1*SP relation-type )).
func splitValues(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ' ' })
}

// String returns the link encoded in link-format.
func (l Link) String() string {
	return string(AppendLink(nil, l))
}
