package rules

import "strings"

// Index maps patterns to values and finds, for a concrete path or topic, the
// most specific matching pattern. It is a trie over segments, so the cost of a
// match depends on the depth of the path, not the number of patterns.
//
// At each segment a literal child is tried before a capture, and a capture
// before a rest capture; with no ambiguous pairs among the patterns (see
// Ambiguous) the first match in that order is the most specific one. An
// Index is built once and is safe for concurrent matching afterwards.
type Index[T any] struct {
	syntax Syntax
	root   trieNode[T]
	n      int
}

type indexed[T any] struct {
	pat Pattern
	val T
}

type trieNode[T any] struct {
	lit     map[string]*trieNode[T]
	capture *trieNode[T]
	// leaf holds patterns ending at this node; rest holds patterns whose
	// {name...} starts at this node's depth.
	leaf []*indexed[T]
	rest []*indexed[T]
}

// NewIndex returns an empty index for patterns of the given syntax.
func NewIndex[T any](syn Syntax) *Index[T] { return &Index[T]{syntax: syn} }

// Len returns the number of patterns added.
func (ix *Index[T]) Len() int { return ix.n }

// Add inserts a pattern. Several values may share one pattern; Match returns
// the first added that its accept function takes.
func (ix *Index[T]) Add(p Pattern, v T) {
	n := &ix.root
	for _, s := range p.segs {
		switch s.Kind {
		case SegLiteral:
			if n.lit == nil {
				n.lit = make(map[string]*trieNode[T], 1)
			}
			c := n.lit[s.Text]
			if c == nil {
				c = &trieNode[T]{}
				n.lit[s.Text] = c
			}
			n = c
		case SegCapture:
			if n.capture == nil {
				n.capture = &trieNode[T]{}
			}
			n = n.capture
		case SegRest:
			n.rest = append(n.rest, &indexed[T]{pat: p, val: v})
			ix.n++
			return
		}
	}
	n.leaf = append(n.leaf, &indexed[T]{pat: p, val: v})
	ix.n++
}

// Match finds the most specific pattern matching the segments whose value
// accept takes (nil accepts all), appending its captures to dst. matched
// reports whether any pattern matched the segments at all, accepted or not.
func (ix *Index[T]) Match(segs []string, accept func(T) bool, dst Captures) (v T, caps Captures, ok, matched bool) {
	hit, matched := ix.root.matchSegs(segs, 0, accept)
	if hit == nil {
		return v, dst, false, matched
	}
	return hit.val, hit.pat.extract(segs, dst), true, true
}

func (n *trieNode[T]) pick(list []*indexed[T], accept func(T) bool, matched *bool) *indexed[T] {
	for _, e := range list {
		*matched = true
		if accept == nil || accept(e.val) {
			return e
		}
	}
	return nil
}

func (n *trieNode[T]) matchSegs(segs []string, i int, accept func(T) bool) (*indexed[T], bool) {
	matched := false
	if i == len(segs) {
		return n.pick(n.leaf, accept, &matched), matched
	}
	if c := n.lit[segs[i]]; c != nil {
		hit, m := c.matchSegs(segs, i+1, accept)
		if hit != nil {
			return hit, true
		}
		matched = matched || m
	}
	if n.capture != nil {
		hit, m := n.capture.matchSegs(segs, i+1, accept)
		if hit != nil {
			return hit, true
		}
		matched = matched || m
	}
	return n.pick(n.rest, accept, &matched), matched
}

// MatchTopic is Match for an MQTT topic name, walking its levels without
// splitting it. A capture in the first level does not match a topic that
// starts with '$' ([MQTT-4.7.2-1]).
func (ix *Index[T]) MatchTopic(topic string, accept func(T) bool, dst Captures) (v T, caps Captures, ok bool) {
	hit := ix.root.matchTopic(topic, 0, accept)
	if hit == nil {
		return v, dst, false
	}
	return hit.val, hit.pat.extractTopic(topic, dst), true
}

func (n *trieNode[T]) matchTopic(topic string, pos int, accept func(T) bool) *indexed[T] {
	var unused bool
	if pos > len(topic) {
		return n.pick(n.leaf, accept, &unused)
	}
	level, next := topic[pos:], len(topic)+1
	if j := strings.IndexByte(level, '/'); j >= 0 {
		level, next = level[:j], pos+j+1
	}
	if c := n.lit[level]; c != nil {
		if hit := c.matchTopic(topic, next, accept); hit != nil {
			return hit
		}
	}
	if pos == 0 && strings.HasPrefix(topic, "$") {
		return nil
	}
	if n.capture != nil {
		if hit := n.capture.matchTopic(topic, next, accept); hit != nil {
			return hit
		}
	}
	return n.pick(n.rest, accept, &unused)
}

// Overlapping calls fn for every indexed pattern that some concrete path or
// topic matches together with p (see Overlaps), until fn returns false. The
// trie is walked only along branches p can reach.
func (ix *Index[T]) Overlapping(p Pattern, fn func(Pattern, T) bool) {
	ix.root.overlap(p.segs, func(e *indexed[T]) bool {
		if Overlaps(p, e.pat) {
			return fn(e.pat, e.val)
		}
		return true
	})
}

func visit[T any](list []*indexed[T], fn func(*indexed[T]) bool) bool {
	for _, e := range list {
		if !fn(e) {
			return false
		}
	}
	return true
}

func (n *trieNode[T]) overlap(segs []Segment, fn func(*indexed[T]) bool) bool {
	if len(segs) == 0 {
		return visit(n.leaf, fn)
	}
	if !visit(n.rest, fn) {
		return false
	}
	switch s := segs[0]; s.Kind {
	case SegLiteral:
		if c := n.lit[s.Text]; c != nil && !c.overlap(segs[1:], fn) {
			return false
		}
		if n.capture != nil {
			return n.capture.overlap(segs[1:], fn)
		}
	case SegCapture:
		for _, c := range n.lit {
			if !c.overlap(segs[1:], fn) {
				return false
			}
		}
		if n.capture != nil {
			return n.capture.overlap(segs[1:], fn)
		}
	case SegRest:
		for _, c := range n.lit {
			if !c.all(fn) {
				return false
			}
		}
		if n.capture != nil {
			return n.capture.all(fn)
		}
	}
	return true
}

func (n *trieNode[T]) all(fn func(*indexed[T]) bool) bool {
	if !visit(n.leaf, fn) || !visit(n.rest, fn) {
		return false
	}
	for _, c := range n.lit {
		if !c.all(fn) {
			return false
		}
	}
	if n.capture != nil {
		return n.capture.all(fn)
	}
	return true
}
