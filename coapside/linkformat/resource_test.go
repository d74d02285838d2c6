package linkformat

import (
	"errors"
	"reflect"
	"testing"
)

var sampleResources = []Resource{
	{Path: "/sensors/temp", ResourceTypes: []string{"temperature-c"}, Interfaces: []string{"sensor"},
		ContentFormats: []uint16{0}, Observable: true},
	{Path: "/sensors/light", ResourceTypes: []string{"light-lux", "oic.r.light"}, Interfaces: []string{"sensor"},
		ContentFormats: []uint16{0, 60}, Size: 2048},
	{Path: "/fw", Title: `Firmware "beta", v2`, Params: []Param{{Name: "rel", Value: "alternate", HasValue: true}}},
}

func TestWellKnownCore(t *testing.T) {
	tests := []struct {
		name    string
		queries []string
		want    string
	}{
		{"all", nil, `</sensors/temp>;rt="temperature-c";if="sensor";ct=0;obs,` +
			`</sensors/light>;rt="light-lux oic.r.light";if="sensor";ct="0 60";sz=2048,` +
			`</fw>;title="Firmware \"beta\", v2";rel="alternate"`},
		{"rt exact", []string{"rt=temperature-c"}, `</sensors/temp>;rt="temperature-c";if="sensor";ct=0;obs`},
		{"rt prefix", []string{"rt=light*"}, `</sensors/light>;rt="light-lux oic.r.light";if="sensor";ct="0 60";sz=2048`},
		{"second rt value", []string{"rt=oic.r.light"}, `</sensors/light>;rt="light-lux oic.r.light";if="sensor";ct="0 60";sz=2048`},
		{"no match", []string{"rt=temperature"}, ""},
		{"href", []string{"href=/fw"}, `</fw>;title="Firmware \"beta\", v2";rel="alternate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := WellKnownCore(sampleResources, tt.queries)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestWellKnownCoreErrors(t *testing.T) {
	if _, err := WellKnownCore(sampleResources, []string{"rt=a*b"}); !errors.Is(err, ErrBadQuery) {
		t.Errorf("bad query: err = %v, want ErrBadQuery", err)
	}
	bad := []Resource{{Path: "/a b"}}
	if _, err := WellKnownCore(bad, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad path: err = %v, want ErrInvalid", err)
	}
}

func TestResourceRoundTrip(t *testing.T) {
	doc, err := WellKnownCore(sampleResources, nil)
	if err != nil {
		t.Fatal(err)
	}
	links, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != len(sampleResources) {
		t.Fatalf("got %d links, want %d", len(links), len(sampleResources))
	}
	for i, l := range links {
		r, err := ResourceFromLink(l)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(r, sampleResources[i]) {
			t.Errorf("resource %d\n got %#v\nwant %#v", i, r, sampleResources[i])
		}
	}
}

func TestResourceFromLinkErrors(t *testing.T) {
	for _, doc := range []string{
		`</a>;ct=abc`, `</a>;ct=65536`, `</a>;ct="0 x"`, `</a>;ct=-1`, `</a>;ct=01`, `</a>;ct`,
		`</a>;sz=4294967296`, `</a>;sz=1.5`, `</a>;sz=""`,
	} {
		t.Run(doc, func(t *testing.T) {
			ls, err := ParseString(doc)
			if err != nil {
				t.Fatal(err)
			}
			if r, err := ResourceFromLink(ls[0]); !errors.Is(err, ErrBadNumber) {
				t.Fatalf("ResourceFromLink = %+v, %v; want ErrBadNumber", r, err)
			}
		})
	}
}
