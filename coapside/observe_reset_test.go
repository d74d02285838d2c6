package coapside

import "testing"

func TestResetMemoryRing(t *testing.T) {
	r := newResetMemory(3)
	a := obsID{"ep-a", "t1"}
	b := obsID{"ep-b", "t2"}
	r.remember(a, 1)
	r.remember(b, 1)
	r.remember(a, 2)
	r.remember(a, 3) // overwrites (ep-a, 1)
	tests := []struct {
		endpoint string
		mid      uint16
		want     obsID
		ok       bool
	}{
		{"ep-a", 1, obsID{}, false}, // forgotten by the ring
		{"ep-b", 1, b, true},
		{"ep-b", 1, obsID{}, false}, // taken once
		{"ep-a", 3, a, true},
		{"ep-c", 3, obsID{}, false},
	}
	for _, tc := range tests {
		got, ok := r.take(tc.endpoint, tc.mid)
		if ok != tc.ok || got != tc.want {
			t.Errorf("take(%s, %d) = %v %v, want %v %v", tc.endpoint, tc.mid, got, ok, tc.want, tc.ok)
		}
	}
	if len(r.ids) != 1 { // (ep-a, 2) is still remembered
		t.Errorf("%d ids left, want 1", len(r.ids))
	}
}
