package bridge

import "sync"

// subscribed is the set of MQTT filters the bridge is subscribed to. A
// topic that matches several subscribed filters (cmd/+/led and cmd/+/#,
// config/+ and config/#) is delivered once per filter; the rule kinds use
// this set to handle such a message once, on one chosen filter, and
// acknowledge the other copies.
type subscribed struct {
	mu   sync.RWMutex
	live map[string]bool
}

func newSubscribed() *subscribed { return &subscribed{live: map[string]bool{}} }

// set records whether the bridge is subscribed to a filter: set once the
// subscription is made, cleared before it is removed.
func (s *subscribed) set(filter string, live bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if live {
		s.live[filter] = true
	} else {
		delete(s.live, filter)
	}
}

// handles reports whether a message delivered on filter got is the copy to
// handle, given the filters of the rules its topic matches in order of
// preference: it is the copy delivered on the first of them that is
// subscribed. When none is (a reload adding them, a delivery that came
// with a subscription before it was recorded), every copy is handled: a
// reload can at worst handle a message twice, never lose it.
func (s *subscribed) handles(got string, want ...string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, f := range want {
		if f == got {
			return true
		}
		if s.live[f] {
			return false
		}
	}
	return true
}
