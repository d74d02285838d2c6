package rules

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem found in a rule file, located at File:Line. Line is 0
// when the problem concerns the file as a whole.
type Error struct {
	File string
	Line int
	Msg  string
}

// Error formats the problem as "file:line: message".
func (e Error) Error() string {
	if e.Line <= 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Errors lists every problem found while loading rule files, ordered by file
// and line. It matches ErrInvalid with errors.Is.
type Errors []Error

// Error prints one problem per line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Is reports whether target is ErrInvalid.
func (es Errors) Is(target error) bool { return target == ErrInvalid }

// Pos is the place a rule or key was written.
type Pos struct {
	File string
	Line int
}

// String formats the position as "file:line".
func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// keyLines has the line of each key of the entries of a load, by the
// position of the entry's header, so that a problem found once the rules
// are built is placed at the key it is about.
type keyLines map[Pos]map[string]int

// add records the keys of e.
func (k keyLines) add(e *entry) {
	m := make(map[string]int, len(e.fields))
	for _, f := range e.fields {
		m[f.key] = f.line
	}
	k[e.pos] = m
}

// key returns the position of key in the entry whose header is at rule,
// or rule when the key was not written.
func (k keyLines) key(rule Pos, key string) Pos {
	if line, ok := k[rule][key]; ok {
		return Pos{File: rule.File, Line: line}
	}
	return rule
}

// MaxErrors bounds the problems reported for one load; a hostile or badly
// broken file cannot make the report itself unbounded.
const MaxErrors = 1000

// diags collects errors while loading.
type diags struct {
	list    Errors
	dropped int
}

func (d *diags) addf(p Pos, format string, args ...any) {
	if len(d.list) >= MaxErrors {
		d.dropped++
		return
	}
	msg := fmt.Sprintf(format, args...)
	if len(msg) > maxMsgLen {
		// Values from the file are echoed in messages; keep each line short.
		msg = strings.ToValidUTF8(msg[:maxMsgLen], "") + "..."
	}
	d.list = append(d.list, Error{File: p.File, Line: p.Line, Msg: msg})
}

// maxMsgLen bounds one message.
const maxMsgLen = 400

// full reports whether further errors would be dropped.
func (d *diags) full() bool { return len(d.list) >= MaxErrors }

// err returns the collected errors sorted by file and line, or nil.
func (d *diags) err() error {
	if len(d.list) == 0 {
		return nil
	}
	out := make(Errors, len(d.list))
	copy(out, d.list)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		return out[i].Line < out[j].Line
	})
	if d.dropped > 0 {
		last := out[len(out)-1]
		out = append(out, Error{File: last.File, Msg: fmt.Sprintf("%d more problems not shown", d.dropped)})
	}
	return out
}

// clip shortens a value echoed in a message.
func clip(s string) string {
	const n = 80
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}
