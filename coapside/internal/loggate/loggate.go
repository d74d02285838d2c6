// Package loggate bounds how often a repeated event is logged at Warn, so
// that a flood of refusals or failures costs a bounded number of log lines
// while every event is still counted by its caller.
package loggate

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// Gate lets one event a second through at Warn and reports how many were
// held back (logged at Debug) since the last one. The zero value is ready.
type Gate struct {
	last       atomic.Int64 // unix nanos of the last Warn
	suppressed atomic.Uint64
}

// Level returns the level to log the current event at and, for Warn, how
// many events were held back since the previous Warn.
func (g *Gate) Level() (slog.Level, uint64) {
	now := time.Now().UnixNano()
	last := g.last.Load()
	if now-last >= int64(time.Second) && g.last.CompareAndSwap(last, now) {
		return slog.LevelWarn, g.suppressed.Swap(0)
	}
	g.suppressed.Add(1)
	return slog.LevelDebug, 0
}
