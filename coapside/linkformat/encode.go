package linkformat

import (
	"fmt"
	"strings"
)

// alwaysQuoted lists parameters whose grammar requires a quoted-string
// (anchor, title: RFC 6690 §2) or which are conventionally quoted because they
// may carry several space-separated values (rt, if, rel, rev).
var alwaysQuoted = map[string]bool{
	"anchor": true, "title": true, "rt": true, "if": true, "rel": true, "rev": true,
}

// Marshal encodes links as a link-format document after checking that each
// one can be encoded (see Link.Validate).
func Marshal(links []Link) ([]byte, error) {
	for i := range links {
		if err := links[i].Validate(); err != nil {
			return nil, fmt.Errorf("link %d: %w", i, err)
		}
	}
	return AppendLinks(nil, links), nil
}

// AppendLinks appends links, separated by ",", to dst. It does not validate;
// use Marshal for links that come from outside the program.
func AppendLinks(dst []byte, links []Link) []byte {
	for i, l := range links {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendLink(dst, l)
	}
	return dst
}

// AppendLink appends one link-value to dst. Values are written as a ptoken
// when the grammar allows it and as an escaped quoted-string otherwise.
func AppendLink(dst []byte, l Link) []byte {
	dst = append(dst, '<')
	dst = append(dst, l.Target...)
	dst = append(dst, '>')
	for _, p := range l.Params {
		dst = append(dst, ';')
		dst = append(dst, p.Name...)
		if !p.HasValue {
			continue
		}
		dst = append(dst, '=')
		if !alwaysQuoted[strings.ToLower(p.Name)] && isPtoken(p.Value) {
			dst = append(dst, p.Value...)
			continue
		}
		dst = appendQuoted(dst, p.Value)
	}
	return dst
}

// appendQuoted writes v as a quoted-string, escaping '"' and '\'.
func appendQuoted(dst []byte, v string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, v[i])
	}
	return append(dst, '"')
}

func isPtoken(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if !isPtokenByte(v[i]) {
			return false
		}
	}
	return true
}

// Validate reports whether l can be encoded so that Parse returns it
// unchanged: the target must be a URI reference without whitespace, controls
// or angle brackets, and every parameter name must be a non-empty parmname.
func (l Link) Validate() error {
	for i := 0; i < len(l.Target); i++ {
		if !isTargetByte(l.Target[i]) {
			return fmt.Errorf("%w: byte %q in target %q", ErrInvalid, l.Target[i], l.Target)
		}
	}
	for _, p := range l.Params {
		if p.Name == "" {
			return fmt.Errorf("%w: empty parameter name", ErrInvalid)
		}
		for i := 0; i < len(p.Name); i++ {
			if !isNameByte(p.Name[i]) {
				return fmt.Errorf("%w: byte %q in parameter name %q", ErrInvalid, p.Name[i], p.Name)
			}
		}
		if !p.HasValue && p.Value != "" {
			return fmt.Errorf("%w: parameter %q has a value but HasValue is false", ErrInvalid, p.Name)
		}
	}
	return nil
}
