package testkit

import (
	"fmt"
	"sync"
	"testing"
)

// Tally counts occurrences by key, for tests that must see each of many
// messages exactly once. The zero value is ready; it is safe for
// concurrent use.
type Tally struct {
	mu sync.Mutex
	m  map[string]int
	n  int
}

// Add counts one occurrence of key.
func (c *Tally) Add(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[key]++
	c.n++
}

// Total is the number of occurrences counted, of every key.
func (c *Tally) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// Has reports whether key was counted.
func (c *Tally) Has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key] > 0
}

// Check fails the test unless every key in want was counted exactly once
// and nothing else was; the failure names what is off.
func (c *Tally) Check(tb testing.TB, what string, want []string) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var off []string
	expected := make(map[string]bool, len(want))
	for _, k := range want {
		expected[k] = true
		if c.m[k] != 1 {
			off = append(off, fmt.Sprintf("%q×%d", k, c.m[k]))
		}
	}
	for k, v := range c.m {
		if !expected[k] {
			off = append(off, fmt.Sprintf("unexpected %q×%d", k, v))
		}
	}
	if len(off) > 0 || c.n != len(want) {
		tb.Errorf("%s: %d in all, want %d, each once; off: %v", what, c.n, len(want), off)
	}
}
