package rules

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
	var d diags
	var names []string
	seen := map[string]bool{}
	for _, g := range globs {
		pat := g
		if !filepath.IsAbs(pat) {
			pat = filepath.Join(baseDir, pat)
		}
		matches, err := filepath.Glob(pat)
		if err != nil {
			d.addf(Pos{File: g}, "bad glob: %v", err)
			continue
		}
		if len(matches) == 0 && !strings.ContainsAny(g, "*?[") {
			d.addf(Pos{File: pat}, "no such file")
		}
		sort.Strings(matches)
		for _, m := range matches {
			if !seen[m] {
				seen[m] = true
				names = append(names, m)
			}
		}
	}
	srcs := make([]Source, 0, len(names))
	total := 0
	for _, name := range names {
		data, err := readLimited(name)
		if err != nil {
			d.addf(Pos{File: name}, "%v", err)
			continue
		}
		if total += len(data); total > MaxTotalSize {
			d.addf(Pos{File: name}, "%v: rule files exceed %d bytes in total", ErrFileTooLarge, MaxTotalSize)
			break
		}
		srcs = append(srcs, Source{Name: name, Data: data, Dir: filepath.Dir(name)})
	}
	return parse(srcs, &d)
}

// readLimited reads a file of at most MaxFileSize bytes without reading more
// than one byte past the limit.
func readLimited(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, pe.Err
		}
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, errors.New("is a directory")
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: larger than the %d byte limit", ErrFileTooLarge, MaxFileSize)
	}
	return data, nil
}

// Parse loads rule sources as one rule set.
func Parse(srcs ...Source) (*Set, error) {
	var d diags
	return parse(srcs, &d)
}

func parse(srcs []Source, d *diags) (*Set, error) {
	s := &Set{devices: map[string]*Device{}}
	for _, src := range srcs {
		for _, e := range parseDocument(src.Name, src.Data, d) {
			x := &dec{e: e, d: d, dir: src.Dir}
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
			case KindPSK:
				s.PSKs = append(s.PSKs, x.psk())
			}
		}
	}
	validate(s, d)
	if err := d.err(); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadPSKFile reads a key file holding only [[psk]] entries (the DTLS
// server's psk_file).
func LoadPSKFile(name string) ([]*PSK, error) {
	data, err := readLimited(name)
	if err != nil {
		return nil, Errors{{File: name, Msg: err.Error()}}
	}
	return ParsePSKs(Source{Name: name, Data: data})
}

// ParsePSKs loads [[psk]] entries; any other section is an error.
func ParsePSKs(src Source) ([]*PSK, error) {
	var d diags
	var out []*PSK
	for _, e := range parseDocument(src.Name, src.Data, &d) {
		if e.section != string(KindPSK) {
			d.addf(e.pos, "a key file holds [[psk]] entries only, not [[%s]]", e.section)
			continue
		}
		x := &dec{e: e, d: &d}
		x.checkKeys()
		out = append(out, x.psk())
	}
	checkPSKs(out, &d)
	if err := d.err(); err != nil {
		return nil, err
	}
	return out, nil
}
