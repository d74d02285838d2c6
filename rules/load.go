package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// MaxTotalSize bounds the rule files of one load together.
const MaxTotalSize = 64 << 20

// Source is one rule file's name (as printed in errors) and content.
type Source struct {
	Name string
	Data []byte
	// Dir resolves relative cert_file, key_file and ca_file paths; empty
	// leaves them as written.
	Dir string
}

// LoadFiles reads every file matching the globs (relative globs are taken
// from baseDir) and loads them as one rule set. A glob without wildcards
// must name an existing file; a glob with wildcards may match nothing. Any
// problem in any file is reported: the error is an Errors value listing
// every "file:line: message".
func LoadFiles(globs []string, baseDir string) (*Set, error) {
	return ReadFiles(globs, baseDir).Load()
}

// Files is what the rule files held when ReadFiles read them: their content
// and the problems met reading them. Reading and parsing are separate so a
// caller can read twice and parse only content that stayed the same.
type Files struct {
	// Sources are the files read, in load order.
	Sources []Source
	// Unmatched are the wildcard globs that matched no file (a literal
	// path that does not exist is an error instead).
	Unmatched []string
	mtimes    []time.Time // each source's modification time, taken before reading it
	d         diags
}

// ReadFiles expands the globs as LoadFiles does and reads every matching
// file; problems (a missing file, one too large) are kept for Load.
func ReadFiles(globs []string, baseDir string) *Files {
	f := &Files{}
	var names []string
	seen := map[string]bool{}
	for _, g := range globs {
		pat := g
		if !filepath.IsAbs(pat) {
			pat = filepath.Join(baseDir, pat)
		}
		matches, err := filepath.Glob(pat)
		if err != nil {
			f.d.addf(Pos{File: g}, "bad glob: %v", err)
			continue
		}
		literal := !strings.ContainsAny(g, "*?[")
		switch {
		case len(matches) == 0 && literal:
			f.d.addf(Pos{File: pat}, "no such file")
			continue
		case len(matches) == 0:
			f.Unmatched = append(f.Unmatched, g)
		case literal:
			if st, err := os.Stat(pat); err == nil && st.IsDir() {
				f.d.addf(Pos{File: pat}, "is a directory; to load its rule files write the glob %q", filepath.Join(g, "*.toml"))
				continue
			}
		}
		sort.Strings(matches)
		for _, m := range matches {
			if !seen[m] {
				seen[m] = true
				names = append(names, m)
			}
		}
	}
	f.Sources = make([]Source, 0, len(names))
	total := 0
	for _, name := range names {
		data, mtime, err := readFile(name)
		if err != nil {
			f.d.addf(Pos{File: name}, "%v", err)
			continue
		}
		if total += len(data); total > MaxTotalSize {
			f.d.addf(Pos{File: name}, "%v: rule files exceed %d bytes in total", ErrFileTooLarge, MaxTotalSize)
			break
		}
		f.Sources = append(f.Sources, Source{Name: name, Data: data, Dir: filepath.Dir(name)})
		f.mtimes = append(f.mtimes, mtime)
	}
	return f
}

// Load parses the files read as one rule set, reporting the problems met
// reading them with those found parsing them.
func (f *Files) Load() (*Set, error) {
	d := diags{list: append(Errors(nil), f.d.list...), dropped: f.d.dropped}
	return parse(f.Sources, &d)
}

// Same reports whether f and g found the same files with the same content,
// modification times and problems reading them. A file rewritten with the
// same bytes in between is not the same: the two reads may have caught two
// writes at the same point.
func (f *Files) Same(g *Files) bool {
	if len(f.Sources) != len(g.Sources) || len(f.d.list) != len(g.d.list) || f.d.dropped != g.d.dropped {
		return false
	}
	for i, s := range f.Sources {
		if s.Name != g.Sources[i].Name || !f.mtimes[i].Equal(g.mtimes[i]) || !bytes.Equal(s.Data, g.Sources[i].Data) {
			return false
		}
	}
	for i, e := range f.d.list {
		if e != g.d.list[i] {
			return false
		}
	}
	return true
}

// readFile reads a file of at most MaxFileSize bytes without reading more
// than one byte past the limit, and returns its modification time, taken
// before reading.
func readFile(name string) ([]byte, time.Time, error) {
	f, err := os.Open(name)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, time.Time{}, pe.Err
		}
		return nil, time.Time{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	if st.IsDir() {
		return nil, time.Time{}, errors.New("is a directory")
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(data) > MaxFileSize {
		return nil, time.Time{}, fmt.Errorf("%w: larger than the %d byte limit", ErrFileTooLarge, MaxFileSize)
	}
	return data, st.ModTime(), nil
}

// Parse loads rule sources as one rule set.
func Parse(srcs ...Source) (*Set, error) {
	var d diags
	return parse(srcs, &d)
}

func parse(srcs []Source, d *diags) (*Set, error) {
	s := &Set{devices: map[string]*Device{}}
	at := keyLines{}
	for _, src := range srcs {
		for _, e := range parseDocument(src.Name, src.Data, d) {
			x := &dec{e: e, d: d, dir: src.Dir}
			at.add(e)
			if Kind(e.section) == KindPSK {
				// Keys in a rule file would be read and never used: the
				// coaps listener takes its keys from the psk_file alone.
				d.addf(e.pos, "[[psk]] is not a rule: pre-shared keys of the coaps listener go in the file that coap.dtls.psk_file names (a rule glob must not match that file)")
				continue
			}
			x.checkKeys()
			switch Kind(e.section) {
			case KindDevice:
				s.Devices = append(s.Devices, x.device())
			case KindIngress:
				s.Ingress = append(s.Ingress, x.ingress())
			case KindObserve:
				s.Observe = append(s.Observe, x.observe())
			case KindPoll:
				s.Poll = append(s.Poll, x.poll())
			case KindCommand:
				s.Commands = append(s.Commands, x.command())
			case KindResource:
				s.Resources = append(s.Resources, x.resource())
			case KindProxy:
				s.Proxies = append(s.Proxies, x.proxy())
			}
		}
	}
	validate(s, d, at)
	if err := d.err(); err != nil {
		return nil, err
	}
	return s, nil
}
