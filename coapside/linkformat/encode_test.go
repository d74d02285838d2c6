package linkformat

import (
	"errors"
	"reflect"
	"testing"
)

func TestMarshal(t *testing.T) {
	tests := []struct {
		name  string
		links []Link
		want  string
	}{
		{"none", nil, ""},
		{"bare", []Link{{Target: "/a"}}, "</a>"},
		{
			"quoting rules",
			[]Link{{Target: "/a", Params: []Param{
				{"rt", "temp", true},         // always quoted
				{"ct", "40", true},           // ptoken
				{"foo", "a b", true},         // space forces quotes
				{"title", `say "hi"\`, true}, // escapes
				{"obs", "", false},
				{"x", "", true}, // empty value must be quoted
			}}},
			`</a>;rt="temp";ct=40;foo="a b";title="say \"hi\"\\";obs;x=""`,
		},
		{"two links", []Link{{Target: "/a"}, {Target: "/b", Params: []Param{{"sz", "5", true}}}}, "</a>,</b>;sz=5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Marshal(tt.links)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("Marshal = %s, want %s", got, tt.want)
			}
			back, err := Parse(got)
			if err != nil {
				t.Fatalf("Parse(Marshal) error: %v", err)
			}
			if len(back) != len(tt.links) || (len(back) > 0 && !reflect.DeepEqual(back, tt.links)) {
				t.Fatalf("round trip\n got %#v\nwant %#v", back, tt.links)
			}
		})
	}
}

func TestMarshalInvalid(t *testing.T) {
	tests := []struct {
		name string
		link Link
	}{
		{"gt in target", Link{Target: "/a>b"}},
		{"space in target", Link{Target: "/a b"}},
		{"empty name", Link{Target: "/a", Params: []Param{{"", "v", true}}}},
		{"bad name", Link{Target: "/a", Params: []Param{{"r t", "v", true}}}},
		{"value without HasValue", Link{Target: "/a", Params: []Param{{"rt", "v", false}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Marshal([]Link{tt.link}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Marshal(%#v) err = %v, want ErrInvalid", tt.link, err)
			}
		})
	}
}
