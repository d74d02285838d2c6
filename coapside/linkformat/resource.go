package linkformat

import (
	"fmt"
	"strconv"
	"strings"
)

// ContentFormat is the CoAP Content-Format number of application/link-format
// (RFC 6690 §7.3, RFC 7252 §12.3).
const ContentFormat uint16 = 40

// WellKnownPath is the discovery resource path (RFC 6690 §4).
const WellKnownPath = "/.well-known/core"

// Resource describes one resource a server offers, in the terms of its
// discovery entry.
type Resource struct {
	// Path is the link target, normally an absolute path like "/sensors/temp".
	Path string
	// ResourceTypes are the rt values (RFC 6690 §3.1).
	ResourceTypes []string
	// Interfaces are the if values (RFC 6690 §3.2).
	Interfaces []string
	// ContentFormats are the ct values (RFC 7252 §7.2.1).
	ContentFormats []uint16
	// Observable adds the value-less obs attribute (RFC 7641 §6).
	Observable bool
	// Size is the sz attribute (RFC 6690 §3.3); 0 leaves it out.
	Size uint32
	// Title is the human-readable title attribute; "" leaves it out.
	Title string
	// Params are further parameters written after the ones above, such as
	// anchor or rel. When parsed, every parameter not mapped to a field above
	// lands here.
	Params []Param
}

// Link returns the discovery link for r. Attributes come in the order
// rt, if, ct, sz, title, obs, then Params.
func (r Resource) Link() Link {
	l := Link{Target: r.Path}
	if len(r.ResourceTypes) > 0 {
		l.Params = append(l.Params, Param{Name: "rt", Value: strings.Join(r.ResourceTypes, " "), HasValue: true})
	}
	if len(r.Interfaces) > 0 {
		l.Params = append(l.Params, Param{Name: "if", Value: strings.Join(r.Interfaces, " "), HasValue: true})
	}
	if len(r.ContentFormats) > 0 {
		cts := make([]string, len(r.ContentFormats))
		for i, ct := range r.ContentFormats {
			cts[i] = strconv.FormatUint(uint64(ct), 10)
		}
		l.Params = append(l.Params, Param{Name: "ct", Value: strings.Join(cts, " "), HasValue: true})
	}
	if r.Size > 0 {
		l.Params = append(l.Params, Param{Name: "sz", Value: strconv.FormatUint(uint64(r.Size), 10), HasValue: true})
	}
	if r.Title != "" {
		l.Params = append(l.Params, Param{Name: "title", Value: r.Title, HasValue: true})
	}
	if r.Observable {
		l.Params = append(l.Params, Param{Name: "obs"})
	}
	l.Params = append(l.Params, r.Params...)
	return l
}

// ResourceFromLink maps a parsed link onto a Resource. ct must hold
// space-separated numbers in 0..65535 and sz a number in 0..2^32-1; anything
// else returns an error wrapping ErrBadNumber.
func ResourceFromLink(l Link) (Resource, error) {
	r := Resource{Path: l.Target}
	for _, p := range l.Params {
		switch strings.ToLower(p.Name) {
		case "rt":
			r.ResourceTypes = append(r.ResourceTypes, splitValues(p.Value)...)
		case "if":
			r.Interfaces = append(r.Interfaces, splitValues(p.Value)...)
		case "ct":
			if !p.HasValue {
				return Resource{}, fmt.Errorf("%w: ct without value on <%s>", ErrBadNumber, l.Target)
			}
			for _, v := range splitValues(p.Value) {
				n, err := parseCardinal(v, 16)
				if err != nil {
					return Resource{}, fmt.Errorf("%w: ct=%q on <%s>", ErrBadNumber, v, l.Target)
				}
				r.ContentFormats = append(r.ContentFormats, uint16(n))
			}
		case "sz":
			n, err := parseCardinal(p.Value, 32)
			if err != nil {
				return Resource{}, fmt.Errorf("%w: sz=%q on <%s>", ErrBadNumber, p.Value, l.Target)
			}
			r.Size = uint32(n)
		case "title":
			r.Title = p.Value
		case "obs":
			r.Observable = true
		default:
			r.Params = append(r.Params, p)
		}
	}
	return r, nil
}

// parseCardinal parses cardinal = "0" / %x31-39 *DIGIT (RFC 6690 §2) with
// the given bit size.
func parseCardinal(s string, bits int) (uint64, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') || s[0] == '+' {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseUint(s, 10, bits)
}

// WellKnownCore builds the /.well-known/core payload for resources, keeping
// only those whose link matches every query (the Uri-Query values of the
// discovery request). Its Content-Format is ContentFormat. A bad query
// returns an error wrapping ErrBadQuery, which a server answers with 4.00;
// a resource that cannot be encoded returns ErrInvalid.
func WellKnownCore(resources []Resource, queries []string) ([]byte, error) {
	filters, err := ParseFilters(queries)
	if err != nil {
		return nil, err
	}
	var out []byte
	n := 0
	for _, r := range resources {
		l := r.Link()
		if !MatchAll(l, filters) {
			continue
		}
		if err := l.Validate(); err != nil {
			return nil, fmt.Errorf("resource %q: %w", r.Path, err)
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = AppendLink(out, l)
		n++
	}
	return out, nil
}
