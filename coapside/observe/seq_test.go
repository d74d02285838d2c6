package observe

import (
	"testing"
	"time"
)

func TestNextSeq(t *testing.T) {
	for _, tt := range []struct{ in, want uint32 }{
		{0, 1}, {41, 42}, {SeqMask - 1, SeqMask}, {SeqMask, 0}, {0xffffffff, 0},
	} {
		if got := NextSeq(tt.in); got != tt.want {
			t.Errorf("NextSeq(%#x) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
}

func TestFresh(t *testing.T) {
	t0 := time.Unix(5000, 0)
	tests := []struct {
		name   string
		v1, v2 uint32
		dt     time.Duration
		want   bool
	}{
		{"increment", 5, 6, time.Second, true},
		{"big step under 2^23", 0, 1<<23 - 1, time.Second, true},
		{"step of exactly 2^23", 0, 1 << 23, time.Second, false},
		{"equal", 7, 7, time.Second, false},
		{"decrement", 7, 6, time.Second, false},
		{"wrap around", SeqMask, 0, time.Second, true},
		{"wrap around further", SeqMask - 10, 20, time.Second, true},
		{"back by exactly 2^23 is not newer", 1 << 23, 0, time.Second, false},
		{"back by more than 2^23 is newer", 1<<23 + 1, 0, time.Second, true},
		{"old after 128s", 7, 6, 129 * time.Second, true},
		{"old at exactly 128s", 7, 6, 128 * time.Second, false},
		{"high bits ignored", 1<<24 | 5, 6, time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Fresh(tt.v1, t0, tt.v2, t0.Add(tt.dt)); got != tt.want {
				t.Fatalf("Fresh(%d, %d, +%v) = %v, want %v", tt.v1, tt.v2, tt.dt, got, tt.want)
			}
		})
	}
}

func TestTracker(t *testing.T) {
	type ev struct {
		seq  uint32
		dt   time.Duration // since the previous event
		want Verdict
	}
	tests := []struct {
		name   string
		events []ev
	}{
		{"in order", []ev{{1, 0, First}, {2, time.Second, Accept}, {3, time.Second, Accept}}},
		{"duplicate", []ev{{1, 0, First}, {1, time.Second, Duplicate}, {2, time.Second, Accept}}},
		{"reordered", []ev{{1, 0, First}, {3, time.Second, Accept}, {2, time.Second, Stale}, {4, time.Second, Accept}}},
		{"wrap", []ev{{SeqMask - 1, 0, First}, {SeqMask, time.Second, Accept}, {0, time.Second, Accept}, {SeqMask, time.Second, Stale}}},
		{"128 s rule", []ev{{100, 0, First}, {50, 129 * time.Second, Accept}, {49, time.Second, Stale}}},
		{"reboot detected after three", []ev{
			{5_000_000, 0, First}, {5_000_001, time.Second, Accept},
			{0, time.Second, Stale}, {1, time.Second, Stale}, {2, time.Second, Reset},
			{3, time.Second, Accept}, {1, time.Second, Stale},
		}},
		{"scattered stale values are no reset", []ev{
			{1000, 0, First}, {10, time.Second, Stale}, {5, time.Second, Stale},
			{20, time.Second, Stale}, {3, time.Second, Stale}, {1001, time.Second, Accept},
		}},
		{"burst reordering is no reset", []ev{
			{10, 0, First}, {14, time.Second, Accept}, {11, 0, Stale}, {12, 0, Stale}, {13, 0, Stale}, {15, 0, Accept},
		}},
		{"repeated stale value is a duplicate", []ev{
			{1000, 0, First}, {10, time.Second, Stale}, {10, time.Second, Duplicate}, {11, time.Second, Stale},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Tracker
			now := time.Unix(1e6, 0)
			for i, e := range tt.events {
				now = now.Add(e.dt)
				if got := tr.Check(e.seq, now); got != e.want {
					t.Fatalf("event %d (seq %d): %v, want %v", i, e.seq, got, e.want)
				}
			}
		})
	}
}

func TestTrackerClear(t *testing.T) {
	tr := Tracker{ResetAfter: 2}
	now := time.Unix(0, 0)
	tr.Check(100, now)
	if _, _, ok := tr.Last(); !ok {
		t.Fatal("Last not set")
	}
	tr.Clear()
	if tr.ResetAfter != 2 {
		t.Fatal("Clear dropped ResetAfter")
	}
	if v := tr.Check(3, now); v != First {
		t.Fatalf("after Clear: %v", v)
	}
	for _, v := range []Verdict{First, Accept, Duplicate, Stale, Reset} {
		if v.String() == "unknown" {
			t.Errorf("verdict %d has no name", v)
		}
	}
	if !Reset.Accepted() || Stale.Accepted() || Duplicate.Accepted() {
		t.Error("Accepted wrong")
	}
}

func TestReregisterAt(t *testing.T) {
	last := time.Unix(100, 0)
	tests := []struct {
		maxAge uint32
		margin time.Duration
		want   time.Time
	}{
		{DefaultMaxAge, 0, time.Unix(160, 0)},
		{DefaultMaxAge, 5 * time.Second, time.Unix(165, 0)},
		{0, 2 * time.Second, time.Unix(102, 0)},
		{0xffffffff, 0, last.Add(0xffffffff * time.Second)},
	}
	for _, tt := range tests {
		if got := ReregisterAt(last, tt.maxAge, tt.margin); !got.Equal(tt.want) {
			t.Errorf("ReregisterAt(%d, %v) = %v, want %v", tt.maxAge, tt.margin, got, tt.want)
		}
	}
}
