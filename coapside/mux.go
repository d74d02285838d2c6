package coapside

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// ServeMux routes requests by method and Uri-Path, like net/http's ServeMux:
// patterns are "[METHOD ]/seg/{name}/{rest...}" where {name} matches one path
// segment and {rest...} (last only) the remaining segments, possibly none.
// The most specific pattern wins: at the first differing segment a literal
// beats {name}, which beats {rest...}; a pattern with a method beats one
// without. A path matched only for other methods gets 4.05 Method Not Allowed,
// an unmatched path 4.04 Not Found.
type ServeMux struct {
	mu      sync.RWMutex
	entries []*muxEntry
	disc    discovery // resources listed on /.well-known/core
}

// NewServeMux returns an empty mux.
func NewServeMux() *ServeMux { return &ServeMux{} }

type segKind uint8

// Order matters: higher is more specific.
const (
	segRest segKind = iota
	segEnd
	segWild
	segLit
)

type muxSeg struct {
	kind segKind
	text string // literal text or wildcard name
}

type muxEntry struct {
	pattern string
	method  message.Code // 0: any
	segs    []muxSeg
	h       Handler
}

func parsePattern(p string) (*muxEntry, error) {
	e := &muxEntry{pattern: p}
	path := p
	if m, rest, ok := strings.Cut(p, " "); ok {
		c, ok := message.ParseMethod(m)
		if !ok {
			return nil, fmt.Errorf("coap mux: pattern %q: unknown method %q", p, m)
		}
		e.method = c
		path = strings.TrimLeft(rest, " ")
	}
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("coap mux: pattern %q: path must start with /", p)
	}
	names := map[string]bool{}
	trim := strings.TrimPrefix(path, "/")
	if trim == "" {
		return e, nil
	}
	parts := strings.Split(trim, "/")
	for i, s := range parts {
		switch {
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "...}"):
			if i != len(parts)-1 {
				return nil, fmt.Errorf("coap mux: pattern %q: {x...} must be last", p)
			}
			e.segs = append(e.segs, muxSeg{segRest, s[1 : len(s)-4]})
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			e.segs = append(e.segs, muxSeg{segWild, s[1 : len(s)-1]})
		case strings.ContainsAny(s, "{}"):
			return nil, fmt.Errorf("coap mux: pattern %q: bad wildcard %q", p, s)
		default:
			e.segs = append(e.segs, muxSeg{segLit, s})
			continue
		}
		name := e.segs[len(e.segs)-1].text
		if name == "" || names[name] {
			return nil, fmt.Errorf("coap mux: pattern %q: empty or duplicate wildcard name", p)
		}
		names[name] = true
	}
	return e, nil
}

// kindAt returns the segment kind at i, segEnd past the end.
func (e *muxEntry) kindAt(i int) segKind {
	if i < len(e.segs) {
		return e.segs[i].kind
	}
	return segEnd
}

// compareSpecificity orders more specific entries first.
func compareSpecificity(a, b *muxEntry) int {
	n := max(len(a.segs), len(b.segs))
	for i := 0; i <= n; i++ {
		ka, kb := a.kindAt(i), b.kindAt(i)
		if ka != kb {
			return int(kb) - int(ka)
		}
		if ka == segEnd || ka == segRest {
			break
		}
	}
	switch {
	case a.method != 0 && b.method == 0:
		return -1
	case a.method == 0 && b.method != 0:
		return 1
	}
	return 0
}

// Handle registers h for pattern. It panics on an invalid or duplicate
// pattern, like net/http.
func (m *ServeMux) Handle(pattern string, h Handler) {
	if err := m.handle(pattern, h); err != nil {
		panic(err)
	}
}

// HandleFunc registers a handler function for pattern.
func (m *ServeMux) HandleFunc(pattern string, f func(ResponseWriter, *Request)) {
	m.Handle(pattern, HandlerFunc(f))
}

func (m *ServeMux) handle(pattern string, h Handler) error {
	if h == nil {
		return fmt.Errorf("coap mux: nil handler for %q", pattern)
	}
	e, err := parsePattern(pattern)
	if err != nil {
		return err
	}
	e.h = h
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.entries {
		if o.method == e.method && sameShape(o, e) {
			return fmt.Errorf("coap mux: pattern %q conflicts with %q", pattern, o.pattern)
		}
	}
	m.entries = append(m.entries, e)
	slices.SortStableFunc(m.entries, compareSpecificity)
	return nil
}

func sameShape(a, b *muxEntry) bool {
	if len(a.segs) != len(b.segs) {
		return false
	}
	for i := range a.segs {
		if a.segs[i].kind != b.segs[i].kind || a.segs[i].kind == segLit && a.segs[i].text != b.segs[i].text {
			return false
		}
	}
	return true
}

// match tests the request path segments against e, filling values when r
// is non-nil. Segments alias the request options; nothing is allocated
// unless values are filled.
func (e *muxEntry) match(path [][]byte, r *Request) bool {
	for i, s := range e.segs {
		switch s.kind {
		case segRest:
			if r != nil {
				r.SetPathValue(s.text, string(bytes.Join(path[i:], []byte{'/'})))
			}
			return true
		case segLit:
			if i >= len(path) || string(path[i]) != s.text {
				return false
			}
		case segWild:
			if i >= len(path) {
				return false
			}
		}
	}
	if len(path) != len(e.segs) {
		return false
	}
	if r != nil {
		for i, s := range e.segs {
			if s.kind == segWild {
				r.SetPathValue(s.text, string(path[i]))
			}
		}
	}
	return true
}

// pathSegments collects the Uri-Path values into buf.
func pathSegments(opts message.Options, buf [][]byte) [][]byte {
	for _, o := range opts {
		if o.ID == message.URIPath {
			buf = append(buf, o.Value)
		}
	}
	return buf
}

// Handler returns the handler for r and the matched pattern; it returns a
// 4.04 or 4.05 handler when nothing matches.
func (m *ServeMux) Handler(r *Request) (Handler, string) {
	var buf [16][]byte
	path := pathSegments(r.Options, buf[:0])
	m.mu.RLock()
	defer m.mu.RUnlock()
	pathMatched := false
	for _, e := range m.entries {
		if !e.match(path, nil) {
			continue
		}
		if e.method != 0 && e.method != r.Method {
			pathMatched = true
			continue
		}
		e.match(path, r)
		return e.h, e.pattern
	}
	if pathMatched {
		return HandlerFunc(func(w ResponseWriter, _ *Request) { w.SetCode(message.MethodNotAllowed) }), ""
	}
	return NotFoundHandler(), ""
}

// ServeCOAP dispatches to the matching handler.
func (m *ServeMux) ServeCOAP(w ResponseWriter, r *Request) {
	h, p := m.Handler(r)
	r.pattern = p
	h.ServeCOAP(w, r)
}
