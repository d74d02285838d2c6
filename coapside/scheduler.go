package coapside

import (
	"container/heap"
	"sync"
	"time"
)

// timerTarget is an object the scheduler fires; using it instead of a func
// avoids allocating a closure per scheduled item.
type timerTarget interface {
	fire(now time.Time)
}

// timerItem is one scheduled callback: target.fire or else fn runs on the
// scheduler goroutine and must not block.
type timerItem struct {
	at     time.Time
	target timerTarget
	fn     func(now time.Time)
	index  int // heap index; -1 when not scheduled
}

type timerHeap []*timerItem

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	it := x.(*timerItem)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	it.index = -1
	*h = old[:n-1]
	return it
}

// scheduler runs every retransmission and deadline of an Endpoint from one
// goroutine and one timer, instead of a timer per message.
type scheduler struct {
	mu     sync.Mutex
	items  timerHeap
	wakeAt time.Time // when the run loop will next look at the heap
	wake   chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup
}

func newScheduler() *scheduler {
	s := &scheduler{wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.wg.Add(1)
	go s.run()
	return s
}

// schedule runs fn at time at. The item can be cancelled with cancel.
func (s *scheduler) schedule(at time.Time, fn func(time.Time)) *timerItem {
	it := &timerItem{at: at, fn: fn, index: -1}
	s.mu.Lock()
	heap.Push(&s.items, it)
	first := it.index == 0 && it.at.Before(s.wakeAt)
	s.mu.Unlock()
	if first {
		s.poke()
	}
	return it
}

// reschedule moves a (possibly fired) item to a new time.
func (s *scheduler) reschedule(it *timerItem, at time.Time) {
	s.mu.Lock()
	it.at = at
	if it.index >= 0 {
		heap.Fix(&s.items, it.index)
	} else {
		heap.Push(&s.items, it)
	}
	// The run loop is woken only when this item is due before it would look
	// again anyway; otherwise a burst of deadlines costs no wake-ups.
	first := it.index == 0 && it.at.Before(s.wakeAt)
	s.mu.Unlock()
	if first {
		s.poke()
	}
}

// cancel removes the item if it has not fired yet and reports whether it did.
func (s *scheduler) cancel(it *timerItem) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it.index < 0 {
		return false
	}
	heap.Remove(&s.items, it.index)
	return true
}

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *scheduler) stop() {
	close(s.done)
	s.wg.Wait()
}

func (s *scheduler) run() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var due []*timerItem
	for {
		now := time.Now()
		s.mu.Lock()
		due = due[:0]
		for len(s.items) > 0 && !s.items[0].at.After(now) {
			due = append(due, heap.Pop(&s.items).(*timerItem))
		}
		next := time.Hour
		if len(s.items) > 0 {
			next = s.items[0].at.Sub(now)
		}
		s.wakeAt = now.Add(next)
		s.mu.Unlock()
		for _, it := range due {
			if it.target != nil {
				it.target.fire(now)
			} else {
				it.fn(now)
			}
		}
		clear(due)
		if len(due) > 0 {
			continue // callbacks may have scheduled earlier work
		}
		t.Reset(next)
		select {
		case <-s.done:
			return
		case <-s.wake:
			t.Stop()
		case <-t.C:
		}
	}
}
