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

// diags collects errors while loading.
type diags struct {
	list Errors
}

func (d *diags) addf(p Pos, format string, args ...any) {
	d.list = append(d.list, Error{File: p.File, Line: p.Line, Msg: fmt.Sprintf(format, args...)})
}

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
	return out
}
