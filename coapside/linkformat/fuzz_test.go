package linkformat

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics and that every document it
// accepts survives Marshal then Parse unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "</a>", discoveryDoc,
		`</time>;if="clock";rt="ticks";title="Internal Clock";ct=0;obs,</async>;ct=0`,
		`</x>;title="a\,b \"q\" c\\d"`,
		`<coap://[::1]/>;anchor="/";rel="x y"`,
		"</a> ; rt=\"x\" ,\n </b>",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		links, err := Parse(doc)
		if err != nil {
			return
		}
		enc, err := Marshal(links)
		if err != nil {
			t.Fatalf("Marshal of parsed %q: %v", doc, err)
		}
		back, err := Parse(enc)
		if err != nil {
			t.Fatalf("re-parse of %q (from %q): %v", enc, doc, err)
		}
		if len(links) != len(back) || (len(links) > 0 && !reflect.DeepEqual(links, back)) {
			t.Fatalf("round trip of %q\n got %#v\nwant %#v", doc, back, links)
		}
		enc2, _ := Marshal(back)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %q vs %q", enc, enc2)
		}
		for _, l := range links {
			_, _ = ResourceFromLink(l)
		}
	})
}

// FuzzFilter checks that query parsing and matching never panic and that a
// parsed filter prints back to the same query.
func FuzzFilter(f *testing.F) {
	for _, q := range []string{"rt=temp*", "href=/a", "obs", "ct=0", "=", "rt=a*b"} {
		f.Add(q)
	}
	links, err := ParseString(discoveryDoc)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, q string) {
		flt, err := ParseFilter(q)
		if err != nil {
			return
		}
		if flt.String() != q {
			t.Fatalf("ParseFilter(%q).String() = %q", q, flt.String())
		}
		_ = Select(links, []Filter{flt})
	})
}
