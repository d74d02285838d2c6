package rules

import (
	"errors"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2/unstable"
)

// MaxFileSize bounds a rule or key file. Larger files are rejected before
// parsing, which keeps time and memory bounded on hostile input.
const MaxFileSize = 4 << 20

// maxArrayLen bounds the elements of one array value.
const maxArrayLen = 100000

// valueKind is the TOML type of a value, as far as rule files care.
type valueKind uint8

const (
	vString valueKind = iota + 1
	vInt
	vFloat
	vBool
	vArray
	vTable
	vDate
	// vReported marks a value already reported as bad.
	vReported
)

func (k valueKind) String() string {
	switch k {
	case vString:
		return "string"
	case vInt:
		return "integer"
	case vFloat:
		return "float"
	case vBool:
		return "boolean"
	case vArray:
		return "array"
	case vTable:
		return "table"
	case vDate:
		return "date/time"
	}
	return "value"
}

// value is one decoded TOML value with the line it was written on.
type value struct {
	kind valueKind
	str  string
	i    int64
	f    float64
	b    bool
	arr  []value
	line int
}

// field is one key = value pair inside a section.
type field struct {
	key  string
	line int
	val  value
}

// entry is one [[section]] with its keys, in the order written.
type entry struct {
	section string
	pos     Pos
	fields  []*field
	byKey   map[string]*field
}

// sections lists the array tables a rule file may contain.
var sections = []string{"device", "ingress", "observe", "poll", "command", "resource", "proxy", "psk"}

// lineIndex maps byte offsets to 1-based line numbers.
type lineIndex []int

func newLineIndex(data []byte) lineIndex {
	idx := lineIndex{0}
	for i, c := range data {
		if c == '\n' {
			idx = append(idx, i+1)
		}
	}
	return idx
}

func (li lineIndex) line(offset int) int {
	return sort.Search(len(li), func(i int) bool { return li[i] > offset })
}

// parseDocument turns one file into entries. Syntax errors end the file: its
// entries are dropped so no follow-on errors are reported for a half-read
// section.
func parseDocument(file string, data []byte, d *diags) (entries []*entry) {
	defer func() {
		// The TOML parser is third-party code fed outside bytes: a panic
		// there becomes an error for this file, not a crash of the bridge.
		if r := recover(); r != nil {
			d.addf(Pos{File: file}, "TOML parser failed on this file: %v", r)
			entries = nil
		}
	}()
	if len(data) > MaxFileSize {
		d.addf(Pos{File: file}, "file is %d bytes, larger than the %d byte limit", len(data), MaxFileSize)
		return nil
	}
	lines := newLineIndex(data)
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, n := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		d.addf(Pos{File: file, Line: lines.line(off)}, "file is not UTF-8 text")
		return nil
	}
	w := walker{file: file, data: data, lines: lines, d: d}
	w.p.Reset(data)
	var cur *entry
	ignored := false
	for w.p.NextExpression() {
		e := w.p.Expression()
		switch e.Kind {
		case unstable.ArrayTable, unstable.Table:
			keys, line := w.keyPath(e)
			pos := Pos{File: file, Line: line}
			name := strings.Join(keys, ".")
			cur, ignored = nil, true
			switch {
			case !contains(sections, name):
				d.addf(pos, "unknown section [[%s]]%s", clip(name), suggest(name, sections))
			case e.Kind == unstable.Table:
				d.addf(pos, "[%s] must be written as an array of tables: [[%s]]", clip(name), clip(name))
			default:
				cur = &entry{section: name, pos: pos, byKey: map[string]*field{}}
				entries = append(entries, cur)
				ignored = false
			}
		case unstable.KeyValue:
			keys, line := w.keyPath(e)
			pos := Pos{File: file, Line: line}
			key := strings.Join(keys, ".")
			if cur == nil {
				if !ignored {
					d.addf(pos, "key %q is outside any section; start one with [[ingress]], [[command]], ...", clip(key))
				}
				continue
			}
			if prev, dup := cur.byKey[key]; dup {
				d.addf(pos, "duplicate key %q (first set on line %d)", clip(key), prev.line)
				continue
			}
			f := &field{key: key, line: line, val: w.value(e.Value(), line, 0)}
			cur.fields = append(cur.fields, f)
			cur.byKey[key] = f
		}
	}
	if err := w.p.Error(); err != nil {
		line := 0
		msg := err.Error()
		var perr *unstable.ParserError
		if errors.As(err, &perr) {
			msg = perr.Message
			if h := perr.Highlight; cap(h) > 0 && cap(h) <= cap(data) {
				line = lines.line(min(cap(data)-cap(h), len(data)))
			}
		}
		d.addf(Pos{File: file, Line: line}, "TOML syntax error: %s", msg)
		return nil
	}
	return entries
}

type walker struct {
	file  string
	data  []byte
	lines lineIndex
	d     *diags
	p     unstable.Parser
}

// offset returns the position of a node's raw bytes, or -1 when unknown.
func (w *walker) offset(n *unstable.Node) int {
	if n == nil || n.Raw.Length == 0 {
		return -1
	}
	return int(n.Raw.Offset)
}

func (w *walker) keyPath(n *unstable.Node) ([]string, int) {
	var keys []string
	line := 0
	it := n.Key()
	for it.Next() {
		k := it.Node()
		if line == 0 {
			if off := w.offset(k); off >= 0 {
				line = w.lines.line(off)
			}
		}
		keys = append(keys, string(k.Data))
	}
	return keys, line
}

// value converts a value node. Arrays hold scalars only; nested arrays and
// tables are kept as opaque kinds (reported as type errors by the schema)
// without descending into them.
func (w *walker) value(n *unstable.Node, line, depth int) value {
	if off := w.offset(n); off >= 0 {
		line = w.lines.line(off)
	}
	v := value{line: line}
	raw := string(n.Data)
	switch n.Kind {
	case unstable.String:
		v.kind, v.str = vString, raw
	case unstable.Bool:
		v.kind, v.b = vBool, raw == "true"
	case unstable.Integer:
		i, err := strconv.ParseInt(strings.ReplaceAll(raw, "_", ""), 0, 64)
		if err != nil {
			// Out of int64 range: keep it as a float so range checks report it.
			v.kind, v.f = vFloat, math.Inf(1)
			return v
		}
		v.kind, v.i = vInt, i
	case unstable.Float:
		v.kind = vFloat
		switch strings.TrimLeft(raw, "+-") {
		case "inf":
			v.f = math.Inf(1)
		case "nan":
			v.f = math.NaN()
		default:
			v.f, _ = strconv.ParseFloat(strings.ReplaceAll(raw, "_", ""), 64)
		}
	case unstable.Array:
		v.kind = vArray
		if depth > 0 {
			return v
		}
		it := n.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			if len(v.arr) >= maxArrayLen {
				w.d.addf(Pos{File: w.file, Line: line}, "array has more than %d elements", maxArrayLen)
				v.kind = vReported
				v.arr = nil
				return v
			}
			v.arr = append(v.arr, w.value(c, line, depth+1))
		}
	case unstable.InlineTable:
		v.kind = vTable
	default:
		v.kind = vDate
	}
	return v
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
