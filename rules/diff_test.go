package rules

import (
	"os"
	"strings"
	"testing"
)

func loadVariant(t *testing.T, edit func(string) string) *Set {
	t.Helper()
	b, err := os.ReadFile("testdata/good/design.toml")
	if err != nil {
		t.Fatal(err)
	}
	src := edit(string(b))
	s, err := Parse(Source{Name: "design.toml", Data: []byte(src)})
	if err != nil {
		t.Fatalf("variant does not load: %v", err)
	}
	return s
}

func itemKeys[T any](list []T, key func(T) string) string {
	out := make([]string, len(list))
	for i, x := range list {
		out[i] = key(x)
	}
	return strings.Join(out, ",")
}

func updKeys[T any](list []Update[T], key func(T) string) string {
	out := make([]string, len(list))
	for i, x := range list {
		out[i] = key(x.New)
	}
	return strings.Join(out, ",")
}

// mustReplace replaces old (which must occur) with new.
func mustReplace(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("variant: %q not found", old)
	}
	return strings.Replace(s, old, new, 1)
}

func subKey(s Subscription) string { return s.Filter }
func ruleKey(r RuleRef) string     { return string(r.Kind) + ":" + r.Name }

func TestCompare(t *testing.T) {
	same := func(s string) string { return s }
	base := loadVariant(t, same)

	t.Run("first load adds everything", func(t *testing.T) {
		d := Compare(nil, base)
		if got := itemKeys(d.Watches.Added, Watch.Key); got != "greenhouse-1 /battery poll battery,greenhouse-1 /sensors/humidity observe greenhouse,greenhouse-1 /sensors/temp observe greenhouse" {
			t.Errorf("watches added = %s", got)
		}
		if got := itemKeys(d.Subscriptions.Added, subKey); got != "cmd/+/#,config/+" {
			t.Errorf("subscriptions added = %s", got)
		}
		if len(d.Rules.Added) != 5 || len(d.Devices.Added) != 1 {
			t.Errorf("rules %d devices %d", len(d.Rules.Added), len(d.Devices.Added))
		}
	})
	t.Run("identical reload changes nothing", func(t *testing.T) {
		d := Compare(base, loadVariant(t, same))
		if !d.Empty() || len(d.Watches.Kept) != 3 || len(d.Rules.Kept) != 5 {
			t.Errorf("diff = %+v", d)
		}
	})
	t.Run("comments, spacing and key order do not count", func(t *testing.T) {
		d := Compare(base, loadVariant(t, func(s string) string {
			s = strings.ReplaceAll(s, "# ", "#~ ")
			s = mustReplace(t, s, "name    = \"telemetry\"\npath    = \"/telemetry/{device}/{metric}\"", "path = \"/telemetry/{device}/{metric}\"\nname = \"telemetry\"")
			return s
		}))
		if !d.Empty() {
			t.Errorf("diff = %+v", d)
		}
	})
	t.Run("observe topic change restarts only its watches", func(t *testing.T) {
		d := Compare(base, loadVariant(t, func(s string) string {
			return mustReplace(t, s, `topic    = "greenhouse/{device}/{path...}"`, `topic    = "gh/{device}/{path...}"`)
		}))
		if got := updKeys(d.Watches.Changed, Watch.Key); got != "greenhouse-1 /sensors/humidity observe greenhouse,greenhouse-1 /sensors/temp observe greenhouse" {
			t.Errorf("changed watches = %s", got)
		}
		if got := updKeys(d.Watches.Kept, Watch.Key); got != "greenhouse-1 /battery poll battery" {
			t.Errorf("kept watches = %s", got)
		}
		if !d.Subscriptions.Empty() || len(d.Subscriptions.Kept) != 2 {
			t.Errorf("subscriptions = %+v", d.Subscriptions)
		}
		if got := updKeys(d.Rules.Changed, ruleKey); got != "observe:greenhouse" {
			t.Errorf("changed rules = %s", got)
		}
	})
	t.Run("path removed and filter changed", func(t *testing.T) {
		d := Compare(base, loadVariant(t, func(s string) string {
			s = mustReplace(t, s, `paths    = ["/sensors/temp", "/sensors/humidity"]`, `paths    = ["/sensors/temp"]`)
			return mustReplace(t, s, `filter         = "cmd/{device}/{resource...}"`, `filter         = "command/{device}/{resource...}"`)
		}))
		if got := itemKeys(d.Watches.Removed, Watch.Key); got != "greenhouse-1 /sensors/humidity observe greenhouse" {
			t.Errorf("removed watches = %s", got)
		}
		if got := itemKeys(d.Subscriptions.Removed, subKey) + " " + itemKeys(d.Subscriptions.Added, subKey); got != "cmd/+/# command/+/#" {
			t.Errorf("subscriptions removed/added = %s", got)
		}
	})
	t.Run("device address change restarts its watches", func(t *testing.T) {
		d := Compare(base, loadVariant(t, func(s string) string {
			return mustReplace(t, s, "coap://127.0.0.1:5690", "coap://127.0.0.1:5691")
		}))
		if len(d.Devices.Changed) != 1 || len(d.Watches.Changed) != 3 || !d.Rules.Empty() {
			t.Errorf("diff = devices %+v watches changed %d rules %+v", d.Devices, len(d.Watches.Changed), d.Rules)
		}
	})
	t.Run("discover watch", func(t *testing.T) {
		d := Compare(base, loadVariant(t, func(s string) string {
			return mustReplace(t, s, `paths    = ["/sensors/temp", "/sensors/humidity"]`, `discover = "rt=temperature"`)
		}))
		if len(d.Watches.Added) != 1 || !d.Watches.Added[0].Discovery() || d.Watches.Added[0].Key() != "greenhouse-1 discover greenhouse" {
			t.Errorf("added watches = %+v", d.Watches.Added)
		}
		if got := itemKeys(d.Watches.Removed, Watch.Key); got != "greenhouse-1 /sensors/humidity observe greenhouse,greenhouse-1 /sensors/temp observe greenhouse" {
			t.Errorf("removed watches = %s", got)
		}
		if got := updKeys(d.Watches.Kept, Watch.Key); got != "greenhouse-1 /battery poll battery" {
			t.Errorf("kept watches = %s", got)
		}
	})
	t.Run("rule removed", func(t *testing.T) {
		d := Compare(base, loadVariant(t, func(s string) string {
			i := strings.Index(s, "[[resource]]")
			return s[:i]
		}))
		if got := itemKeys(d.Rules.Removed, ruleKey); got != "resource:config" {
			t.Errorf("removed rules = %s", got)
		}
		if got := itemKeys(d.Subscriptions.Removed, subKey); got != "config/+" {
			t.Errorf("removed subscriptions = %s", got)
		}
	})
}
