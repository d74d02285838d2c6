package dtls

import (
	"reflect"
	"testing"
)

// TestStatsSnapshotComplete sets every counter to a distinct value and
// checks that each reaches its Stats field.
func TestStatsSnapshotComplete(t *testing.T) {
	var c counters
	c.handshakesOK.Store(1)
	c.handshakesActive.Store(2)
	c.sessionsActive.Store(3)
	c.sessionsExpired.Store(4)
	c.sessionsReplaced.Store(5)
	c.sessionsDead.Store(6)
	c.refusedLimit.Store(7)
	c.refusedMalformed.Store(8)
	c.droppedNotDTLS.Store(9)
	c.droppedUnknown.Store(10)
	c.droppedQueueFull.Store(11)
	c.readErrors.Store(12)
	c.backoffRefusals.Store(13)
	c.refusedCookie.Store(14)
	c.handshakesEvicted.Store(15)
	c.refusedPerSource.Store(16)
	c.handshakesResumed.Store(17)
	c.resumeInvalid.Store(18)
	c.sessionsMoved.Store(19)
	for r := range c.handshakesFailed {
		c.handshakesFailed[r].Store(uint64(100 + r))
	}
	s := c.snapshot()
	v := reflect.ValueOf(s)
	seen := map[uint64]string{}
	for i := range v.NumField() {
		f := v.Field(i)
		name := v.Type().Field(i).Name
		if f.Kind() == reflect.Array {
			continue
		}
		var n uint64
		if f.CanUint() {
			n = f.Uint()
		} else {
			n = uint64(f.Int())
		}
		if n == 0 {
			t.Errorf("Stats.%s not filled by snapshot", name)
		}
		if other, dup := seen[n]; dup {
			t.Errorf("Stats.%s and %s read the same counter", name, other)
		}
		seen[n] = name
	}
	for _, r := range FailReasons() {
		if s.Failed(r) != uint64(100+int(r)) {
			t.Errorf("Failed(%v) = %d", r, s.Failed(r))
		}
		if r.String() == "" {
			t.Errorf("reason %d has no name", r)
		}
	}
	if s.TotalFailed() != 100+101+102+103+104 {
		t.Errorf("TotalFailed = %d", s.TotalFailed())
	}
	if s.Failed(FailReason(-1)) != 0 || s.Failed(numFailReasons) != 0 {
		t.Error("out-of-range reason counted")
	}
}
