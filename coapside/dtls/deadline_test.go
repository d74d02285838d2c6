package dtls

import (
	"testing"
	"time"
)

func fired(d *deadline) bool {
	select {
	case <-d.Done():
		return true
	default:
		return false
	}
}

func TestDeadline(t *testing.T) {
	d := newDeadline()
	if fired(d) {
		t.Fatal("new deadline fired")
	}
	d.Set(time.Now().Add(-time.Second))
	if !fired(d) {
		t.Fatal("past deadline did not fire")
	}
	d.Set(time.Time{})
	if fired(d) {
		t.Fatal("zero deadline still fired")
	}
	d.Set(time.Now().Add(30 * time.Millisecond))
	if fired(d) {
		t.Fatal("future deadline fired early")
	}
	select {
	case <-d.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("future deadline never fired")
	}
	d.Set(time.Now().Add(20 * time.Millisecond))
	d.Set(time.Time{}) // disarm before it fires
	time.Sleep(50 * time.Millisecond)
	if fired(d) {
		t.Fatal("disarmed deadline fired")
	}
}
