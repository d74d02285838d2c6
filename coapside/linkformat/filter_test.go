package linkformat

import (
	"errors"
	"testing"
)

const discoveryDoc = `</sensors/temp>;rt="temperature-c oic.r.temp";if="sensor";ct=0;obs,` +
	`</sensors/light>;rt="light-lux";if="sensor";ct="0 50",` +
	`</actuators/led>;rt="led";if="actuator";title="Front LED";sz=12,` +
	`</time>;rt="ticks";title="Internal Clock"`

func TestFilterMatch(t *testing.T) {
	links, err := ParseString(discoveryDoc)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		queries []string
		want    []string // targets, in order
	}{
		{nil, []string{"/sensors/temp", "/sensors/light", "/actuators/led", "/time"}},
		{[]string{"rt=temperature-c"}, []string{"/sensors/temp"}},
		{[]string{"rt=oic.r.temp"}, []string{"/sensors/temp"}},
		{[]string{"rt=temperature"}, nil},
		{[]string{"rt=temp*"}, []string{"/sensors/temp"}},
		{[]string{"rt=*"}, []string{"/sensors/temp", "/sensors/light", "/actuators/led", "/time"}},
		{[]string{"if=sensor"}, []string{"/sensors/temp", "/sensors/light"}},
		{[]string{"href=/sensors/*"}, []string{"/sensors/temp", "/sensors/light"}},
		{[]string{"href=/time"}, []string{"/time"}},
		{[]string{"href=/tim"}, nil},
		{[]string{"ct=50"}, []string{"/sensors/light"}},
		{[]string{"ct=0"}, []string{"/sensors/temp", "/sensors/light"}},
		{[]string{"title=Front LED"}, []string{"/actuators/led"}},
		{[]string{"title=Internal*"}, []string{"/time"}},
		{[]string{"sz=12"}, []string{"/actuators/led"}},
		{[]string{"obs"}, []string{"/sensors/temp"}},
		{[]string{"obs=*"}, []string{"/sensors/temp"}},
		{[]string{"obs=x"}, nil},
		{[]string{"RT=led"}, []string{"/actuators/led"}},
		{[]string{"if=sensor", "ct=50"}, []string{"/sensors/light"}},
		{[]string{"nosuch=1"}, nil},
	}
	for _, tt := range tests {
		t.Run(joinQ(tt.queries), func(t *testing.T) {
			fs, err := ParseFilters(tt.queries)
			if err != nil {
				t.Fatal(err)
			}
			got := Select(links, fs)
			var targets []string
			for _, l := range got {
				targets = append(targets, l.Target)
			}
			if !equalStrings(targets, tt.want) {
				t.Fatalf("Select(%q) = %q, want %q", tt.queries, targets, tt.want)
			}
		})
	}
}

func TestParseFilterErrors(t *testing.T) {
	for _, q := range []string{"", "=x", "rt=te*mp", "r t=x", "rt*=x", "rt=**"} {
		t.Run(q, func(t *testing.T) {
			if f, err := ParseFilter(q); !errors.Is(err, ErrBadQuery) {
				t.Fatalf("ParseFilter(%q) = %+v, %v; want ErrBadQuery", q, f, err)
			}
		})
	}
}

func TestFilterString(t *testing.T) {
	for _, q := range []string{"rt=temp", "rt=temp*", "obs", "href=/a/*", "rt="} {
		f, err := ParseFilter(q)
		if err != nil {
			t.Fatal(err)
		}
		if f.String() != q {
			t.Errorf("ParseFilter(%q).String() = %q", q, f.String())
		}
	}
}

func joinQ(qs []string) string {
	if len(qs) == 0 {
		return "none"
	}
	s := qs[0]
	for _, q := range qs[1:] {
		s += "&" + q
	}
	return s
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
