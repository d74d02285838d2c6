package linkformat

import (
	"fmt"
	"strings"
)

// Parse decodes a link-format document (RFC 6690 §2):
//
//	Link            = link-value-list
//	link-value-list = [ link-value *[ "," link-value ]]
//	link-value      = "<" URI-Reference ">" *( ";" link-param )
//	link-param      = parmname [ "=" ( ptoken / quoted-string ) ]
//
// Optional whitespace (SP, HTAB, CR, LF) around "," and ";" is accepted, as
// several deployed servers emit it. An empty document yields no links and no
// error. Any other deviation returns an error wrapping ErrSyntax.
func Parse(doc []byte) ([]Link, error) {
	p := parser{s: doc}
	p.skipSpace()
	if p.eof() {
		return nil, nil
	}
	var links []Link
	for {
		l, err := p.link()
		if err != nil {
			return nil, err
		}
		links = append(links, l)
		p.skipSpace()
		if p.eof() {
			return links, nil
		}
		if p.s[p.i] != ',' {
			return nil, p.errorf("expected ',' between links, got %q", p.s[p.i])
		}
		p.i++
		p.skipSpace()
		if p.eof() {
			return nil, p.errorf("empty link after ','")
		}
	}
}

// ParseString is Parse for a string document.
func ParseString(doc string) ([]Link, error) {
	return Parse([]byte(doc))
}

type parser struct {
	s []byte
	i int
}

func (p *parser) eof() bool { return p.i >= len(p.s) }

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", ErrSyntax, p.i, fmt.Sprintf(format, args...))
}

func (p *parser) skipSpace() {
	for !p.eof() {
		switch p.s[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

// link parses one link-value starting at "<".
func (p *parser) link() (Link, error) {
	var l Link
	if p.s[p.i] != '<' {
		return l, p.errorf("expected '<', got %q", p.s[p.i])
	}
	p.i++
	start := p.i
	for !p.eof() && p.s[p.i] != '>' {
		if !isTargetByte(p.s[p.i]) {
			return l, p.errorf("invalid byte %q in link target", p.s[p.i])
		}
		p.i++
	}
	if p.eof() {
		return l, p.errorf("unterminated link target")
	}
	l.Target = string(p.s[start:p.i])
	p.i++ // '>'
	for {
		p.skipSpace()
		if p.eof() || p.s[p.i] != ';' {
			return l, nil
		}
		p.i++
		p.skipSpace()
		prm, err := p.param()
		if err != nil {
			return l, err
		}
		l.Params = append(l.Params, prm)
	}
}

// param parses one link-param after ";".
func (p *parser) param() (Param, error) {
	var prm Param
	start := p.i
	for !p.eof() && isNameByte(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		if p.eof() {
			return prm, p.errorf("missing parameter name after ';'")
		}
		return prm, p.errorf("invalid byte %q in parameter name", p.s[p.i])
	}
	prm.Name = string(p.s[start:p.i])
	if p.eof() || p.s[p.i] != '=' {
		return prm, nil
	}
	p.i++
	prm.HasValue = true
	if !p.eof() && p.s[p.i] == '"' {
		v, err := p.quoted()
		if err != nil {
			return prm, err
		}
		prm.Value = v
		return prm, nil
	}
	start = p.i
	for !p.eof() && isPtokenByte(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return prm, p.errorf("missing value for parameter %q", prm.Name)
	}
	prm.Value = string(p.s[start:p.i])
	return prm, nil
}

// quoted parses a quoted-string (RFC 2616 §2.2): DQUOTE *( qdtext /
// quoted-pair ) DQUOTE, where quoted-pair = "\" CHAR. A backslash escapes
// the following byte, so "a\,b" and "a,b" both decode to a,b and "\"" to a
// double quote.
func (p *parser) quoted() (string, error) {
	p.i++ // opening quote
	start := p.i
	var b *strings.Builder
	for !p.eof() {
		c := p.s[p.i]
		switch c {
		case '"':
			var v string
			if b == nil {
				v = string(p.s[start:p.i])
			} else {
				v = b.String()
			}
			p.i++
			return v, nil
		case '\\':
			if b == nil {
				b = &strings.Builder{}
				b.Write(p.s[start:p.i])
			}
			p.i++
			if p.eof() {
				return "", p.errorf("unterminated escape in quoted string")
			}
			b.WriteByte(p.s[p.i])
		default:
			if b != nil {
				b.WriteByte(c)
			}
		}
		p.i++
	}
	return "", p.errorf("unterminated quoted string")
}

// isTargetByte reports whether c may appear in a URI reference between "<"
// and ">". URI references (RFC 3986) hold no whitespace or controls; bytes
// >= 0x80 are accepted for IRIs.
func isTargetByte(c byte) bool {
	return c > ' ' && c != 0x7f && c != '<' && c != '>'
}

// isNameByte reports whether c may appear in a parameter name:
// parmname = 1*( ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." /
// "^" / "_" / "`" / "|" / "~" ), plus "*" for ext-name-star (RFC 5988 §5).
func isNameByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~*", c) >= 0
}

// isPtokenByte reports whether c is a ptokenchar (RFC 6690 §2).
func isPtokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'()*+-./:<=>?@[]^_`{|}~", c) >= 0
}
