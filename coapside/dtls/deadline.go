package dtls

import (
	"sync"
	"time"
)

// deadline is an updatable deadline whose Done channel closes when it
// passes. It runs no goroutine of its own (time.AfterFunc), so an
// abandoned deadline leaves nothing behind.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{}
	fired bool
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

// Set arms the deadline at t; the zero time disarms it.
func (d *deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.fired {
		d.ch = make(chan struct{})
		d.fired = false
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.ch)
		d.fired = true
		return
	}
	ch := d.ch
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.ch == ch && !d.fired {
			close(d.ch)
			d.fired = true
		}
	})
}

// Done returns a channel that is closed once the deadline passes.
func (d *deadline) Done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}
