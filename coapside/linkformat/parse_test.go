package linkformat

import (
	"errors"
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Link
	}{
		{"empty", "", nil},
		{"only whitespace", " \r\n", nil},
		{"bare target", "</a>", []Link{{Target: "/a"}}},
		{"empty target", "<>", []Link{{Target: ""}}},
		{
			"rfc6690 example",
			`</sensors/temp>;if="sensor",</sensors/light>;if="sensor"`,
			[]Link{
				{Target: "/sensors/temp", Params: []Param{{"if", "sensor", true}}},
				{Target: "/sensors/light", Params: []Param{{"if", "sensor", true}}},
			},
		},
		{
			// libcoap coap-server's discovery document.
			"libcoap time",
			`</time>;if="clock";rt="ticks";title="Internal Clock";ct=0;obs,</async>;ct=0`,
			[]Link{
				{Target: "/time", Params: []Param{
					{"if", "clock", true}, {"rt", "ticks", true},
					{"title", "Internal Clock", true}, {"ct", "0", true}, {"obs", "", false},
				}},
				{Target: "/async", Params: []Param{{"ct", "0", true}}},
			},
		},
		{
			"multiple rt values",
			`</t>;rt="temperature-c oic.r.temp"`,
			[]Link{{Target: "/t", Params: []Param{{"rt", "temperature-c oic.r.temp", true}}}},
		},
		{
			"escaped comma quote and backslash",
			`</x>;title="a\,b \"q\" c\\d,e;f"`,
			[]Link{{Target: "/x", Params: []Param{{"title", `a,b "q" c\d,e;f`, true}}}},
		},
		{
			"anchor and rel",
			`<http://example.com/>;anchor="coap://[2001:db8::1]/";rel="describedby"`,
			[]Link{{Target: "http://example.com/", Params: []Param{
				{"anchor", "coap://[2001:db8::1]/", true}, {"rel", "describedby", true},
			}}},
		},
		{
			"ptoken with special chars",
			`</a>;foo=x/y:z@1;sz=1024;ct=40`,
			[]Link{{Target: "/a", Params: []Param{{"foo", "x/y:z@1", true}, {"sz", "1024", true}, {"ct", "40", true}}}},
		},
		{
			"empty quoted value",
			`</a>;title=""`,
			[]Link{{Target: "/a", Params: []Param{{"title", "", true}}}},
		},
		{
			"whitespace around separators",
			"</a> ; rt=\"x\" ,\n </b>",
			[]Link{{Target: "/a", Params: []Param{{"rt", "x", true}}}, {Target: "/b"}},
		},
		{
			"ext-name-star",
			`</a>;title*=UTF-8'de'n%c3%a4chstes`,
			[]Link{{Target: "/a", Params: []Param{{"title*", "UTF-8'de'n%c3%a4chstes", true}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseString(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q)\n got %#v\nwant %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"no angle bracket", "/a"},
		{"unterminated target", "</a"},
		{"space in target", "</a b>"},
		{"nested angle", "</a<b>"},
		{"trailing comma", "</a>,"},
		{"double comma", "</a>,,</b>"},
		{"garbage after link", "</a>x"},
		{"missing param name", "</a>;"},
		{"bad param name", "</a>;r(t=1"},
		{"missing value", "</a>;rt="},
		{"missing value before comma", "</a>;rt=,</b>"},
		{"unterminated quote", `</a>;rt="abc`},
		{"unterminated escape", `</a>;rt="abc\`},
		{"unquoted comma value", `</a>;rt=a b`},
		{"junk after quoted", `</a>;rt="a"b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseString(tt.in)
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse(%q) = %#v, %v; want ErrSyntax", tt.in, got, err)
			}
		})
	}
}

func TestLinkAccessors(t *testing.T) {
	ls, err := ParseString(`</t>;RT="a b";rt=c;obs;ct=40`)
	if err != nil {
		t.Fatal(err)
	}
	l := ls[0]
	if v, ok := l.Param("rt"); !ok || v != "a b" {
		t.Errorf("Param(rt) = %q, %v", v, ok)
	}
	if got, want := l.Values("rt"), []string{"a", "b", "c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Values(rt) = %q, want %q", got, want)
	}
	if !l.Has("obs") || l.Has("sz") {
		t.Errorf("Has(obs)=%v Has(sz)=%v", l.Has("obs"), l.Has("sz"))
	}
	if v, ok := l.Param("obs"); !ok || v != "" {
		t.Errorf("Param(obs) = %q, %v", v, ok)
	}
}
