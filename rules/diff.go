package rules

import (
	"crypto/sha256"
	"sort"
)

// Update pairs an item in the old set with the same item in the new set.
type Update[T any] struct {
	Old, New T
}

// ItemDiff says, for one kind of item, what a reload adds, removes, changes
// and keeps. Items are matched by identity (a key); an item whose key is in
// both sets is Changed when its content differs, Kept otherwise. Each list
// is sorted by key.
type ItemDiff[T any] struct {
	Added   []T
	Removed []T
	Changed []Update[T]
	Kept    []Update[T]
}

// Empty reports whether nothing was added, removed or changed.
func (d ItemDiff[T]) Empty() bool {
	return len(d.Added) == 0 && len(d.Removed) == 0 && len(d.Changed) == 0
}

// RuleRef identifies a rule across reloads.
type RuleRef struct {
	Kind Kind
	Name string
	Hash Hash
}

// Diff is what a reload must do to go from one rule set to the next.
type Diff struct {
	// Devices by name; a device is Changed when its address or
	// credentials changed.
	Devices ItemDiff[*Device]
	// Watches by device and path: observations and polls. A watch is
	// Changed when its rule or its device changed; the bridge restarts it.
	// Kept watches stay running.
	Watches ItemDiff[Watch]
	// Subscriptions by MQTT filter; Changed when the QoS changed.
	Subscriptions ItemDiff[Subscription]
	// Rules by kind and name, for routes, handlers and per-rule metrics.
	Rules ItemDiff[RuleRef]
}

// Empty reports whether the two sets behave the same.
func (d Diff) Empty() bool {
	return d.Devices.Empty() && d.Watches.Empty() && d.Subscriptions.Empty() && d.Rules.Empty()
}

// Compare computes the reload from old to new. old may be nil (first load:
// everything is added).
func Compare(old, new *Set) Diff {
	if old == nil {
		old = &Set{}
	}
	if new == nil {
		new = &Set{}
	}
	return Diff{
		Devices: diffItems(old.Devices, new.Devices,
			func(d *Device) string { return d.Name },
			func(d *Device) Hash { return d.hash }),
		Watches:       diffItems(old.Watches(), new.Watches(), Watch.Key, watchHash),
		Subscriptions: diffItems(uniqueSubs(old.Subscriptions()), uniqueSubs(new.Subscriptions()), func(s Subscription) string { return s.Filter }, func(s Subscription) Hash { return Hash{s.QoS} }),
		Rules:         diffItems(old.Rules(), new.Rules(), func(r RuleRef) string { return string(r.Kind) + " " + r.Name }, func(r RuleRef) Hash { return r.Hash }),
	}
}

func watchHash(w Watch) Hash {
	h := sha256.New()
	h.Write(w.Device.hash[:])
	if w.Observe != nil {
		h.Write([]byte("observe"))
		h.Write(w.Observe.hash[:])
	} else {
		h.Write([]byte("poll"))
		h.Write(w.Poll.hash[:])
	}
	var out Hash
	h.Sum(out[:0])
	return out
}

// uniqueSubs merges subscriptions to the same filter, keeping the highest
// QoS: the broker holds one subscription per filter and client.
func uniqueSubs(subs []Subscription) []Subscription {
	idx := map[string]int{}
	out := subs[:0:0]
	for _, s := range subs {
		if i, ok := idx[s.Filter]; ok {
			out[i].QoS = max(out[i].QoS, s.QoS)
			continue
		}
		idx[s.Filter] = len(out)
		out = append(out, s)
	}
	return out
}

// Rules lists every rule (devices and keys excluded) with its content hash.
func (s *Set) Rules() []RuleRef {
	var out []RuleRef
	for _, r := range s.Ingress {
		out = append(out, RuleRef{KindIngress, r.Name, r.hash})
	}
	for _, r := range s.Observe {
		out = append(out, RuleRef{KindObserve, r.Name, r.hash})
	}
	for _, r := range s.Poll {
		out = append(out, RuleRef{KindPoll, r.Name, r.hash})
	}
	for _, r := range s.Commands {
		out = append(out, RuleRef{KindCommand, r.Name, r.hash})
	}
	for _, r := range s.Resources {
		out = append(out, RuleRef{KindResource, r.Name, r.hash})
	}
	for _, r := range s.Proxies {
		out = append(out, RuleRef{KindProxy, r.Name, r.hash})
	}
	return out
}

func diffItems[T any](old, new []T, key func(T) string, hash func(T) Hash) ItemDiff[T] {
	var d ItemDiff[T]
	before := make(map[string]T, len(old))
	for _, o := range old {
		before[key(o)] = o
	}
	seen := make(map[string]bool, len(new))
	for _, n := range new {
		k := key(n)
		seen[k] = true
		o, ok := before[k]
		switch {
		case !ok:
			d.Added = append(d.Added, n)
		case hash(o) != hash(n):
			d.Changed = append(d.Changed, Update[T]{Old: o, New: n})
		default:
			d.Kept = append(d.Kept, Update[T]{Old: o, New: n})
		}
	}
	for _, o := range old {
		if !seen[key(o)] {
			d.Removed = append(d.Removed, o)
		}
	}
	byKey := func(list []T) {
		sort.SliceStable(list, func(i, j int) bool { return key(list[i]) < key(list[j]) })
	}
	byNewKey := func(list []Update[T]) {
		sort.SliceStable(list, func(i, j int) bool { return key(list[i].New) < key(list[j].New) })
	}
	byKey(d.Added)
	byKey(d.Removed)
	byNewKey(d.Changed)
	byNewKey(d.Kept)
	return d
}
