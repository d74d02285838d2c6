package testkit

import (
	"testing"
	"time"
)

// maxPoll bounds the pause between two checks of an Eventually condition.
const maxPoll = 20 * time.Millisecond

// Eventually checks cond until it holds and fails the test when timeout
// passes first; what names the awaited state in the failure message. The
// pause between checks starts at a millisecond and doubles up to 20 ms, so
// a quick condition is seen at once and a slow one is not polled in a
// tight loop. Call it from the test goroutine.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
			return
		}
		time.Sleep(pause)
		pause = min(2*pause, maxPoll)
	}
}
