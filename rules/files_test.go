package rules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/message"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadFilesAcrossFiles(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"rules/a.toml": "[[ingress]]\nname = \"t\"\npath = \"/a\"\ntopic = \"a\"\n",
		"rules/b.toml": "\n[[resource]]\nname = \"t\"\npath = \"/b\"\ntopic = \"b\"\n",
		"rules/c.toml": "[[ingress]]\nname = \"c\"\npath = \"/c\"\ntopik = \"c\"\n",
		"other.toml":   "[[device]]\nname = \"d\"\nurl = \"coap://d\"\n",
	})
	_, err := LoadFiles([]string{"rules/*.toml", "missing.toml", "rules/*.nothing", "[bad"}, dir)
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("err = %v", err)
	}
	a, b, c := filepath.Join(dir, "rules/a.toml"), filepath.Join(dir, "rules/b.toml"), filepath.Join(dir, "rules/c.toml")
	want := []string{
		filepath.Join(dir, "missing.toml") + ": no such file",
		fmt.Sprintf("%s:2: duplicate rule name \"t\": also [[ingress]] \"t\" at %s:1", b, a),
		fmt.Sprintf("%s:1: [[ingress]] \"c\": missing required key \"topic\"", c),
		fmt.Sprintf("%s:4: unknown key \"topik\" in [[ingress]]; did you mean \"topic\"?", c),
		"[bad: bad glob: syntax error in pattern", // sorted by file name
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Error())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLoadFilesLimits(t *testing.T) {
	dir := writeFiles(t, map[string]string{"big.toml": strings.Repeat("#\n", MaxFileSize/2+1)})
	if err := os.Mkdir(filepath.Join(dir, "d.toml"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFiles([]string{"*.toml"}, dir)
	if err == nil || !strings.Contains(err.Error(), "big.toml: rules: file too large") || !strings.Contains(err.Error(), "d.toml: is a directory") {
		t.Fatalf("err = %v", err)
	}
	if _, err := LoadFiles(nil, dir); err != nil {
		t.Fatalf("no files: %v", err)
	}
}

// TestDeviceKeySpellings: a device's psk takes the key syntax of psk_file,
// base64 with or without its padding included.
func TestDeviceKeySpellings(t *testing.T) {
	const rules = `
[[device]]
name         = "padded"
url          = "coaps://10.0.0.1"
psk_identity = "padded"
psk          = "base64:c2VjcmV0LWtleS0xMg=="

[[device]]
name         = "unpadded"
url          = "coaps://10.0.0.2"
psk_identity = "unpadded"
psk          = "base64:c2VjcmV0LWtleS0xMg"

[[device]]
name         = "hex"
url          = "coaps://10.0.0.3"
psk_identity = "hex"
psk          = "hex:7365637265742d6b65792d3132"

[[device]]
name         = "plain"
url          = "coaps://10.0.0.4"
psk_identity = "plain"
psk          = "secret-key-12"
`
	s, err := Parse(Source{Name: "r.toml", Data: []byte(rules)})
	if err != nil {
		t.Fatal(err)
	}
	psks, err := keys.ParsePSKFile("psk.toml", []byte("[[psk]]\nidentity = \"x\"\nkey = \"base64:c2VjcmV0LWtleS0xMg\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range s.Devices {
		if d.PSK.Reveal() != "secret-key-12" || !d.PSK.Equal(psks["x"]) {
			t.Errorf("device %s: key %x", d.Name, d.PSK.Bytes())
		}
	}
	_, err = Parse(Source{Name: "r.toml", Data: []byte("[[device]]\nname = \"d\"\nurl = \"coaps://h\"\npsk_identity = \"d\"\npsk = \"base64:c2VjcmV0LWtleS0xMg=\"\n")})
	if err == nil || err.Error() != `r.toml:5: key "psk": bad key: after "base64:" want standard base64 (A-Z a-z 0-9 + /, padding optional)` {
		t.Errorf("bad padding: %v", err)
	}
}

// TestPSKSectionRejected: keys written in a rule file would never reach the
// coaps listener, which reads only the psk_file; bridge check says so.
func TestPSKSectionRejected(t *testing.T) {
	src := "[[ingress]]\nname = \"i\"\npath = \"/i\"\ntopic = \"i\"\n\n[[psk]]\nidentity = \"dev1\"\nkey = \"secret-1\"\n"
	_, err := Parse(Source{Name: "rules.toml", Data: []byte(src)})
	want := "rules.toml:6: [[psk]] is not a rule: pre-shared keys of the coaps listener go in the file that coap.dtls.psk_file names (a rule glob must not match that file)"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

// TestMethodAndFormatSpellings: rule files read method and content format
// names as message.ParseMethod and message.ParseContentFormat do.
func TestMethodAndFormatSpellings(t *testing.T) {
	src := `
[[ingress]]
name    = "i"
path    = "/i"
methods = ["post", "Put", "iPATCH", "ipatch", "PATCH"]
topic   = "i"

[[command]]
name           = "c"
filter         = "c/set"
method         = "fetch"
url            = "coap://10.0.0.1/c"
content_format = "Application/CBOR"

[[resource]]
name           = "r"
path           = "/r"
topic          = "r"
content_format = "senml"
`
	s, err := Parse(Source{Name: "r.toml", Data: []byte(src)})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Ingress[0].Methods; len(got) != 5 || got[0] != message.POST || got[1] != message.PUT || got[2] != message.IPATCH || got[3] != message.IPATCH || got[4] != message.PATCH {
		t.Errorf("methods %v", got)
	}
	if c := s.Commands[0]; c.Method != message.FETCH || *c.ContentFormat != message.AppCBOR {
		t.Errorf("command %v %v", c.Method, *c.ContentFormat)
	}
	if r := s.Resources[0]; *r.ContentFormat != message.AppSenMLJSON {
		t.Errorf("resource %v", *r.ContentFormat)
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"topic", "qos", "retain", "response_topic"}
	for _, tc := range []struct{ in, want string }{
		{"topik", `; did you mean "topic"?`},
		{"qso", `; did you mean "qos"?`},
		{"responce_topic", `; did you mean "response_topic"?`},
		{"colour", ""},
		{"x", ""},
	} {
		if got := suggest(tc.in, known); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCheckIdentity(t *testing.T) {
	s := mustLoad(t, "[[ingress]]\nname=\"i\"\npath=\"/e/{device}\"\nidentity=\"{device}\"\ntopic=\"e/{device}\"\n\n[[resource]]\nname=\"r\"\npath=\"/r/{device}\"\ntopic=\"r/{device}\"\n")
	in := s.Ingress[0]
	caps := Captures{{"device", "door-7"}}
	if err := in.CheckIdentity(caps, "door-7"); err != nil {
		t.Errorf("matching identity: %v", err)
	}
	for _, id := range []string{"door-8", ""} {
		if err := in.CheckIdentity(caps, id); !errors.Is(err, ErrIdentity) {
			t.Errorf("identity %q: err = %v", id, err)
		}
	}
	if err := s.Resources[0].CheckIdentity(caps, ""); err != nil {
		t.Errorf("rule without identity: %v", err)
	}
}

// TestReadFilesSame: two reads agree only when nothing was written in
// between, even a write of the same bytes; Load can be called on one read
// more than once.
func TestReadFilesSame(t *testing.T) {
	dir := writeFiles(t, map[string]string{"a.toml": "[[ingress]]\nname = \"a\"\npath = \"/a\"\ntopic = \"a\"\n"})
	globs := []string{"*.toml", "missing.toml"}
	first := ReadFiles(globs, dir)
	if !first.Same(ReadFiles(globs, dir)) {
		t.Fatal("two reads of unchanged files differ")
	}
	name := filepath.Join(dir, "a.toml")
	st, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, first.Sources[0].Data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Make the rewrite visible on file systems with coarse timestamps.
	if err := os.Chtimes(name, st.ModTime(), st.ModTime().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if first.Same(ReadFiles(globs, dir)) {
		t.Fatal("a rewrite with the same bytes reads as unchanged")
	}
	if err := os.WriteFile(name, []byte("[[ingress]]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if first.Same(ReadFiles(globs, dir)) {
		t.Fatal("new content reads as unchanged")
	}
	_, err1 := first.Load()
	_, err2 := first.Load()
	if err1 == nil || err2 == nil || err1.Error() != err2.Error() || !strings.Contains(err1.Error(), "missing.toml: no such file") {
		t.Fatalf("Load twice: %v / %v", err1, err2)
	}
}

// TestLoadFilesFolderNamed: a rule glob naming a folder says how to name
// its rule files instead.
func TestLoadFilesFolderNamed(t *testing.T) {
	dir := writeFiles(t, map[string]string{"rules/a.toml": "# none\n"})
	_, err := LoadFiles([]string{"rules"}, dir)
	want := `rules: is a directory; to load its rule files write the glob "rules/*.toml"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %s", err, want)
	}
}
