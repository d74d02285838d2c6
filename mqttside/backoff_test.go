package mqttside

import (
	"testing"
	"time"
)

func TestBackoffSchedule(t *testing.T) {
	const minD, maxD = 500 * time.Millisecond, 5 * time.Second
	b := newBackoff(minD, maxD)
	b.jitter = func(int64) int64 { return 0 } // the upper end of each draw
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got := b.wait(); got != w {
			t.Fatalf("wait %d = %v, want %v", i+1, got, w)
		}
	}
	b.reset()
	if got := b.wait(); got != minD {
		t.Fatalf("wait after reset = %v, want %v", got, minD)
	}

	// The jitter takes at most a quarter off, and the cap holds whatever
	// it draws.
	b = newBackoff(minD, maxD)
	var n int64
	b.jitter = func(limit int64) int64 { n = limit; return limit }
	for range 10 {
		next := b.peek()
		got := b.wait()
		if n != int64(next)/4 || got != next-next/4 || got > maxD {
			t.Fatalf("wait = %v with jitter limit %v, want %v", got, time.Duration(n), next-next/4)
		}
	}
	b = newBackoff(minD, maxD)
	for range 1000 {
		if d := b.wait(); d < minD*3/4 || d > maxD {
			t.Fatalf("wait %v outside [%v, %v]", d, minD*3/4, maxD)
		}
	}
}
