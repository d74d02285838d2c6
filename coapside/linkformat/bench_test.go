package linkformat

import (
	"fmt"
	"testing"
)

func BenchmarkParse(b *testing.B) {
	doc := []byte(discoveryDoc)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(doc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWellKnownCore(b *testing.B) {
	rs := make([]Resource, 100)
	for i := range rs {
		rs[i] = Resource{Path: fmt.Sprintf("/sensors/%d", i), ResourceTypes: []string{"temperature-c"},
			Interfaces: []string{"sensor"}, ContentFormats: []uint16{0}, Observable: true}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := WellKnownCore(rs, []string{"rt=temp*"}); err != nil {
			b.Fatal(err)
		}
	}
}
