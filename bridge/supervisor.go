package bridge

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// part is a long-lived piece of the bridge with a lifecycle like
// net/http's Server. Run does the part's work until Shutdown; it returns
// nil once the part was shut down, or the error that stopped it on its
// own. Shutdown stops the part, gracefully until ctx ends and then at
// once, and returns when every goroutine the part started has ended.
// Shutdown may come before Run (Run then returns nil at once) and more
// than once.
type part interface {
	Run(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// supervisor runs the bridge's parts, each Run in a goroutine it owns,
// hands out the first error a part stops with, and shuts the parts down in
// the order its caller gives.
type supervisor struct {
	log    *slog.Logger
	ctx    context.Context // the parts' Run context; ends once all are shut down
	cancel context.CancelFunc
	failed chan error // the first part that stopped on its own (buffer 1)
	runs   []*partRun // in start order
}

// partRun is one started part.
type partRun struct {
	name     string
	p        part
	done     chan struct{} // closed when Run has returned
	stopping atomic.Bool   // Shutdown was called: an error from Run is not a failure
}

func newSupervisor(log *slog.Logger) *supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	return &supervisor{log: log, ctx: ctx, cancel: cancel, failed: make(chan error, 1)}
}

// start runs p.Run in a goroutine. start and stop are called from one
// goroutine (Bridge.Run).
func (s *supervisor) start(name string, p part) {
	r := &partRun{name: name, p: p, done: make(chan struct{})}
	s.runs = append(s.runs, r)
	go func() {
		defer close(r.done)
		err := p.Run(s.ctx)
		switch {
		case err == nil:
		case r.stopping.Load():
			// The part's Run is expected to return nil after Shutdown.
			s.log.Warn("stopped with an error during shutdown", "part", name, "err", err)
		default:
			select {
			case s.failed <- err:
			default: // another part failed first; this one is logged
				s.log.Error("stopped with an error", "part", name, "err", err)
			}
		}
	}()
}

// stop shuts p down, started or not, and waits until its Run has returned
// (at most until ctx ends). It returns Shutdown's error.
func (s *supervisor) stop(ctx context.Context, name string, p part) error {
	var r *partRun
	for _, pr := range s.runs {
		if pr.name == name {
			r = pr
			r.stopping.Store(true)
		}
	}
	err := p.Shutdown(ctx)
	if r != nil {
		select {
		case <-r.done:
		case <-ctx.Done():
		}
	}
	return err
}

// wait ends the parts' Run context and waits up to d for every Run to
// return. A part still running then is a bug (its Shutdown returned while
// its work went on); it is logged, and wait returns all the same so that a
// shutdown never hangs.
func (s *supervisor) wait(d time.Duration) {
	s.cancel()
	t := time.NewTimer(d)
	defer t.Stop()
	for _, r := range s.runs {
		select {
		case <-r.done:
		case <-t.C:
			var left []string
			for _, r := range s.runs {
				select {
				case <-r.done:
				default:
					left = append(left, r.name)
				}
			}
			s.log.Error("parts still running after shutdown", "parts", left)
			return
		}
	}
}

// runState is the bookkeeping of a part whose Run only waits while the
// part's goroutines work: Run starts once and not after Shutdown, and
// Shutdown ends Run's context and waits for Run to return.
type runState struct {
	mu     sync.Mutex
	closed bool
	cancel context.CancelFunc // ends Run's context; nil until Run
	done   chan struct{}      // closed when Run returns
}

// begin returns the context Run works under, and false when Run must
// return at once (the part is shut down, or Run was called before).
// A Run that begins must call end when it returns.
func (s *runState) begin(ctx context.Context) (context.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.cancel != nil {
		return nil, false
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	return ctx, true
}

// end records that Run returned.
func (s *runState) end() { close(s.done) }

// stop marks the part shut down, ends Run's context and waits for Run to
// return, until ctx ends.
func (s *runState) stop(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// began reports whether Run began.
func (s *runState) began() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancel != nil
}
