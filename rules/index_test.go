package rules

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

func mustLoad(t testing.TB, src string) *Set {
	t.Helper()
	s, err := Parse(Source{Name: "test.toml", Data: []byte(src)})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return s
}

const routeRules = `
[[ingress]]
name  = "generic"
path  = "/t/{device}/{metric}"
topic = "a/{device}/{metric}"

[[ingress]]
name  = "temp"
path  = "/t/{device}/temp"
topic = "b/{device}"

[[ingress]]
name  = "exact"
path  = "/t/gh1/temp"
topic = "c"

[[ingress]]
name  = "firmware"
path  = "/fw/{device}/{rest...}"
topic = "fw/{device}/{rest...}"

[[ingress]]
name  = "root"
path  = "/"
topic = "root"

[[resource]]
name  = "read"
path  = "/t/{device}/{metric}"
topic = "a/{device}/{metric}"
`

func TestMatchPath(t *testing.T) {
	s := mustLoad(t, routeRules)
	tests := []struct {
		method message.Code
		path   string
		rule   string
		caps   string
		err    error
	}{
		{message.POST, "t/gh2/humidity", "generic", "device=gh2 metric=humidity", nil},
		{message.POST, "t/gh2/temp", "temp", "device=gh2", nil},
		{message.PUT, "t/gh1/temp", "exact", "", nil},
		{message.GET, "t/gh1/temp", "read", "device=gh1 metric=temp", nil},
		{message.POST, "fw/d1/a/b/c", "firmware", "device=d1 rest=a/b/c", nil},
		{message.POST, "fw/d1", "", "", ErrNoRoute},
		{message.POST, "", "root", "", nil},
		{message.POST, "t/gh1", "", "", ErrNoRoute},
		{message.POST, "t/gh1/temp/x", "", "", ErrNoRoute},
		{message.DELETE, "t/gh1/temp", "", "", ErrMethodNotAllowed},
		{message.GET, "fw/d1/x", "", "", ErrMethodNotAllowed},
		// One segment "a/b" (Uri-Path a%2Fb) must not read as two.
		{message.POST, "fw/d1/a%2Fb", "", "", ErrEscape},
		{message.POST, "fw/d1/x/a%2Fb", "", "", ErrEscape},
		{message.POST, "fw/d1/a+b", "", "", ErrEscape},
		{message.POST, "fw/d1/%23", "", "", ErrEscape},
		{message.POST, "fw/d1/x//y", "", "", ErrEscape},
		{message.POST, "fw/d1/x/", "", "", ErrEscape},
		{message.POST, "fw/d1/%00", "", "", ErrEscape},
		{message.POST, "fw/d1/..", "", "", ErrEscape},
		{message.POST, "t/a%2Fb/temp", "", "", ErrEscape},
		{message.POST, "t/+/temp", "", "", ErrEscape},
		{message.POST, "fw/+/x", "", "", ErrEscape},
	}
	for _, tc := range tests {
		var segs []string
		if tc.path != "" {
			segs = strings.Split(tc.path, "/")
		}
		for i, s := range segs { // %XX stands for a byte inside one segment
			segs[i] = strings.NewReplacer("%2F", "/", "%23", "#", "%00", "\x00").Replace(s)
		}
		r, caps, err := s.MatchPath(tc.method, segs, nil)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s /%s: err = %v, want %v", tc.method, tc.path, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s /%s: %v", tc.method, tc.path, err)
			continue
		}
		if r.Name() != tc.rule || capsString(caps) != tc.caps {
			t.Errorf("%s /%s = %s {%s}, want %s {%s}", tc.method, tc.path, r.Name(), capsString(caps), tc.rule, tc.caps)
		}
	}
}

func capsString(c Captures) string {
	parts := make([]string, len(c))
	for i, x := range c {
		parts[i] = x.Name + "=" + x.Value
	}
	return strings.Join(parts, " ")
}

const commandRules = `
[[device]]
name = "gh1"
url  = "coap://10.0.0.1:5690"

[[device]]
name         = "lock"
url          = "coaps://10.0.0.2"
psk_identity = "lock"
psk          = "hex:0011"

[[device]]
name = "roamer"

[[command]]
name   = "generic"
filter = "cmd/{device}/{resource...}"
method = "PUT"
url    = "coap://{device}/{resource...}"

[[command]]
name   = "reboot"
filter = "cmd/{device}/reboot"
method = "POST"
url    = "coap://{device}/sys/reboot"

[[command]]
name   = "everything"
filter = "{any...}"
method = "POST"
url    = "coap://192.0.2.1/log"

[[command]]
name   = "sys"
filter = "$SYS/{x}"
method = "POST"
url    = "coap://[2001:db8::1]/sys/{x}"
`

func TestMatchCommand(t *testing.T) {
	s := mustLoad(t, commandRules)
	tests := []struct {
		topic string
		rule  string
		caps  string
	}{
		{"cmd/gh1/led/red", "generic", "device=gh1 resource=led/red"},
		{"cmd/gh1/reboot", "reboot", "device=gh1"},
		{"cmd/gh1", "everything", "any=cmd/gh1"},
		{"other", "everything", "any=other"},
		{"$SYS/load", "sys", "x=load"},
		{"$other/x", "", ""}, // wildcards never match '$' topics, [MQTT-4.7.2-1]
		{"cmd//x", "generic", "device= resource=x"},
	}
	for _, tc := range tests {
		c, caps, ok := s.MatchCommand(tc.topic, nil)
		if tc.rule == "" {
			if ok {
				t.Errorf("%q matched %s", tc.topic, c.Name)
			}
			continue
		}
		if !ok || c.Name != tc.rule || capsString(caps) != tc.caps {
			t.Errorf("%q = %v %v {%s}, want %s {%s}", tc.topic, ok, c, capsString(caps), tc.rule, tc.caps)
		}
	}
}

func TestTarget(t *testing.T) {
	s := mustLoad(t, commandRules)
	tests := []struct {
		topic   string
		host    string
		secure  bool
		device  string
		path    string
		learned string // the device name the bridge looks up where it learned it
		err     error
	}{
		{"cmd/gh1/led/red", "10.0.0.1:5690", false, "gh1", "led/red", "", nil},
		{"cmd/lock/state", "10.0.0.2:5684", true, "lock", "state", "", nil},
		// A name that is no [[device]] is a device the bridge may have
		// learned; never an address.
		{"cmd/evil.example/x", "", false, "", "x", "evil.example", nil},
		// A [[device]] without url is reached where it was learned.
		{"cmd/roamer/led", "", false, "roamer", "led", "roamer", nil},
		{"cmd//x", "", false, "", "", "", ErrEscape},
		{"cmd/gh1/a/../b", "", false, "", "", "", ErrEscape},
		{"anything", "192.0.2.1:5683", false, "", "log", "", nil},
		{"$SYS/load", "[2001:db8::1]:5683", false, "", "sys/load", "", nil},
	}
	for _, tc := range tests {
		c, caps, ok := s.MatchCommand(tc.topic, nil)
		if !ok {
			t.Fatalf("%q: no match", tc.topic)
		}
		tg, err := s.Target(c, caps)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%q: err = %v, want %v", tc.topic, err, tc.err)
			}
			continue
		}
		dev := ""
		if tg.Device != nil {
			dev = tg.Device.Name
		}
		learned := ""
		if tg.Learned {
			learned = tg.Name
		}
		if err != nil || tg.Host != tc.host || tg.Secure != tc.secure || dev != tc.device || strings.Join(tg.Path, "/") != tc.path || learned != tc.learned {
			t.Errorf("%q: target %+v, %v", tc.topic, tg, err)
		}
		if tg.Learned && tg.Options.Has(message.URIHost) {
			t.Errorf("%q: a learned device's request carries Uri-Host: %v", tc.topic, tg.Options)
		}
	}
}

// randPattern builds a path pattern over a tiny alphabet so that random
// patterns overlap often.
func randPattern(r *rand.Rand) string {
	n := r.IntN(4)
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteByte('/')
		switch k := r.IntN(6); {
		case k < 3:
			b.WriteString([]string{"a", "b", "c"}[k])
		case k < 5:
			fmt.Fprintf(&b, "{c%d}", i)
		default:
			fmt.Fprintf(&b, "{r%d...}", i)
			return b.String()
		}
	}
	if n == 0 {
		return "/"
	}
	return b.String()
}

// TestIndexMostSpecific checks, over random conflict-free pattern sets,
// that the trie returns exactly what a linear scan for the most specific
// matching pattern returns.
func TestIndexMostSpecific(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 300; round++ {
		ix := NewIndex[int](PathSyntax)
		var pats []Pattern
		for i := 0; i < 12; i++ {
			p, err := ParsePath(randPattern(r))
			if err != nil {
				t.Fatal(err)
			}
			clash := false
			for _, q := range pats {
				if Ambiguous(p, q) {
					clash = true
				}
			}
			if clash {
				continue
			}
			ix.Add(p, len(pats))
			pats = append(pats, p)
		}
		for probe := 0; probe < 40; probe++ {
			segs := make([]string, r.IntN(5))
			for i := range segs {
				segs[i] = []string{"a", "b", "c", "x"}[r.IntN(4)]
			}
			lit := segsPattern(segs)
			want := -1
			for i, p := range pats {
				if within(lit, p) && (want < 0 || within(p, pats[want])) {
					want = i
				}
			}
			got, _, ok, _ := ix.Match(segs, nil, nil)
			if !ok {
				got = -1
			}
			if got != want {
				name := func(i int) string {
					if i < 0 {
						return "none"
					}
					return pats[i].String()
				}
				t.Fatalf("/%s: trie %s, scan %s", strings.Join(segs, "/"), name(got), name(want))
			}
		}
	}
}

func segsPattern(segs []string) Pattern {
	p := Pattern{syntax: PathSyntax}
	for _, s := range segs {
		p.segs = append(p.segs, Segment{Kind: SegLiteral, Text: s})
	}
	return p
}

// buildLarge returns a rule set with n ingress rules and n command rules,
// device-specific, plus a few generic ones.
func buildLarge(tb testing.TB, n int) *Set {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "[[ingress]]\nname = \"in%d\"\npath = \"/site%d/{device}/{metric}\"\ntopic = \"s%d/{device}/{metric}\"\n\n", i, i%100, i)
		fmt.Fprintf(&b, "[[command]]\nname = \"cmd%d\"\nfilter = \"cmd/dev%d/{resource...}\"\nmethod = \"PUT\"\nurl = \"coap://10.0.0.1/{resource...}\"\n\n", i, i)
	}
	// Make the ingress paths distinct: site%100 alone would clash.
	src := uniquePaths(b.String())
	s, err := Parse(Source{Name: "large.toml", Data: []byte(src)})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func uniquePaths(src string) string {
	var b strings.Builder
	i := 0
	for _, line := range strings.SplitAfter(src, "\n") {
		if strings.HasPrefix(line, "path = ") {
			line = fmt.Sprintf("path = \"/site%d/r%d/{device}/{metric}\"\n", i%100, i)
			i++
		}
		b.WriteString(line)
	}
	return b.String()
}

func TestLargeSetLoads(t *testing.T) {
	s := buildLarge(t, 2000)
	r, caps, err := s.MatchPath(message.POST, []string{"site7", "r1907", "d", "temp"}, nil)
	if err != nil || r.Name() != "in1907" || capsString(caps) != "device=d metric=temp" {
		t.Fatalf("match = %v %v %v", r, caps, err)
	}
	c, caps, ok := s.MatchCommand("cmd/dev1999/led", nil)
	if !ok || c.Name != "cmd1999" || capsString(caps) != "resource=led" {
		t.Fatalf("command = %v %v", c, caps)
	}
}

func BenchmarkMatchPath10k(b *testing.B) {
	s := buildLarge(b, 10000)
	segs := []string{"site42", "r9942", "greenhouse-1", "temp"}
	var buf Captures
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, caps, err := s.MatchPath(message.POST, segs, buf[:0])
		if err != nil {
			b.Fatal(err)
		}
		buf = caps
	}
}

func BenchmarkMatchCommand10k(b *testing.B) {
	s := buildLarge(b, 10000)
	var buf Captures
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, caps, ok := s.MatchCommand("cmd/dev7777/led/red", buf[:0])
		if !ok {
			b.Fatal("no match")
		}
		buf = caps
	}
}

func BenchmarkLoad10k(b *testing.B) {
	for i := 0; i < b.N; i++ {
		buildLarge(b, 10000)
	}
}

// TestSharedSubscriptionFilterRefused: a command filter written as a
// shared subscription is refused with its line, pointing at [cluster].
func TestSharedSubscriptionFilterRefused(t *testing.T) {
	_, err := Parse(Source{Name: "test.toml", Data: []byte(`
[[command]]
name   = "led"
filter = "$share/plant/cmd/{device}/led"
method = "PUT"
url    = "coap://{device}/led"
`)})
	want := `test.toml:4: key "filter": "$share/plant/cmd/{device}/led" is a shared subscription, which rules do not take: the rule would never fire; write the plain filter "cmd/{device}/led" (bridges with the same [cluster] name share commands through the broker)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
}
