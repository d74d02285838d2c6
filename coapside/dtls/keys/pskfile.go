package keys

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"
)

// MaxIdentityLen bounds a PSK identity. RFC 4279 §5.1 allows up to 2^16-1
// bytes; identities of constrained devices are short, and a bound keeps a
// hostile identity out of logs and maps.
const MaxIdentityLen = 256

// pskFile is the TOML layout of a psk_file.
type pskFile struct {
	PSK []pskEntry `toml:"psk"`
}

type pskEntry struct {
	Identity *string `toml:"identity"`
	Key      *string `toml:"key"`
}

// ParsePSKFile parses the psk_file format, the only place pre-shared keys
// of the coaps listener are written:
//
//	[[psk]]
//	identity = "greenhouse-1"
//	key      = "hex:00112233445566778899aabbccddeeff"   # or base64:..., or plain
//
// Errors wrap ErrPSKFile and read "name:line: message". Unknown keys,
// duplicate or empty identities, identities longer than MaxIdentityLen or
// not UTF-8, and keys that do not parse (ParseKey) are all errors.
func ParsePSKFile(name string, data []byte) (map[string]Secret, error) {
	var f pskFile
	if err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(&f); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) && len(sm.Errors) > 0 {
			line, _ := sm.Errors[0].Position()
			return nil, fmt.Errorf("%w: %s:%d: unknown key %q", ErrPSKFile, name, line, strings.Join(sm.Errors[0].Key(), "."))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, fmt.Errorf("%w: %s:%d: %s", ErrPSKFile, name, line, de.Error())
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrPSKFile, name, err)
	}
	lines := entryLines(data)
	at := func(i int) string {
		if i < len(lines) {
			return fmt.Sprintf("%s:%d", name, lines[i])
		}
		return name
	}
	out := make(map[string]Secret, len(f.PSK))
	for i, e := range f.PSK {
		switch {
		case e.Identity == nil || *e.Identity == "":
			return nil, fmt.Errorf("%w: %s: psk entry without identity", ErrPSKFile, at(i))
		case len(*e.Identity) > MaxIdentityLen:
			return nil, fmt.Errorf("%w: %s: identity longer than %d bytes", ErrPSKFile, at(i), MaxIdentityLen)
		case !utf8.ValidString(*e.Identity):
			return nil, fmt.Errorf("%w: %s: identity is not UTF-8", ErrPSKFile, at(i))
		case e.Key == nil:
			return nil, fmt.Errorf("%w: %s: identity %q has no key", ErrPSKFile, at(i), *e.Identity)
		}
		if _, dup := out[*e.Identity]; dup {
			return nil, fmt.Errorf("%w: %s: duplicate identity %q", ErrPSKFile, at(i), *e.Identity)
		}
		k, err := ParseKey(*e.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: identity %q: %w", ErrPSKFile, at(i), *e.Identity, err)
		}
		out[*e.Identity] = k
	}
	return out, nil
}

// entryLines returns the 1-based line of every "[[psk]]" header, in order, so
// that the i-th decoded entry can be reported at its line.
func entryLines(data []byte) []int {
	var lines []int
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), len(data)+1)
	n := 0
	for sc.Scan() {
		n++
		t := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(t, '#'); i >= 0 {
			t = strings.TrimSpace(t[:i])
		}
		if strings.ReplaceAll(t, " ", "") == "[[psk]]" {
			lines = append(lines, n)
		}
	}
	return lines
}
