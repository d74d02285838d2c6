package rules

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

func TestPSKFile(t *testing.T) {
	keys, err := LoadPSKFile("testdata/good/keys.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"greenhouse-1": "00112233445566778899aabbccddeeff", "greenhouse-2": "00112233445566778899aabbccddeeff", "lab-sensor": fmt.Sprintf("%x", "secretPSK")}
	for _, k := range keys {
		if fmt.Sprintf("%x", k.Key.Bytes()) != want[k.Identity] {
			t.Errorf("%s: key %x", k.Identity, k.Key.Bytes())
		}
	}
	if len(keys) != 3 {
		t.Errorf("%d keys", len(keys))
	}
	_, err = ParsePSKs(Source{Name: "k.toml", Data: []byte("[[psk]]\nidentity = \"a\"\nkey = \"x\"\n\n[[device]]\nname = \"d\"\n")})
	if err == nil || err.Error() != "k.toml:5: a key file holds [[psk]] entries only, not [[device]]" {
		t.Errorf("err = %v", err)
	}
	if _, err := LoadPSKFile("testdata/none.toml"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestSecretRedacted(t *testing.T) {
	k, err := ParseKey("hex:73656372657421")
	if err != nil {
		t.Fatal(err)
	}
	if string(k.Bytes()) != "secret!" {
		t.Fatalf("bytes = %q", k.Bytes())
	}
	d := Device{Name: "d", PSK: k}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("device", "psk", k, "device", d)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("device", "psk", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q", k, d, d, k, k), buf.String()} {
		if strings.Contains(s, "secret") || strings.Contains(s, "73656372") {
			t.Errorf("key leaked: %s", s)
		}
	}
	if !strings.Contains(buf.String(), "[redacted]") {
		t.Errorf("log has no redaction marker: %s", buf.String())
	}
	if !k.Equal(NewSecret([]byte("secret!"))) || k.Equal(NewSecret([]byte("secret?"))) {
		t.Error("Equal")
	}
}

func TestParseNames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Method
	}{{"GET", GET}, {"post", POST}, {"iPATCH", IPATCH}, {"ipatch", IPATCH}, {"FETCH", FETCH}} {
		if m, err := ParseMethod(tc.in); err != nil || m != tc.want {
			t.Errorf("ParseMethod(%q) = %v, %v", tc.in, m, err)
		}
	}
	if _, err := ParseMethod("LINK"); err == nil {
		t.Error("LINK accepted")
	}
	for _, tc := range []struct {
		in   string
		want ContentFormat
	}{{"text", TextPlain}, {"text/plain", TextPlain}, {"json", JSON}, {"application/cbor", CBOR}, {"senml+json", SenMLJSON}, {"senml+cbor", SenMLCBOR}, {"link-format", LinkFormat}, {"11542", 11542}} {
		if cf, err := ParseContentFormat(tc.in); err != nil || cf != tc.want {
			t.Errorf("ParseContentFormat(%q) = %v, %v", tc.in, cf, err)
		}
	}
	if _, err := ParseContentFormat("70000"); err == nil {
		t.Error("70000 accepted")
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
