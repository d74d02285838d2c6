package bridge

import (
	"sort"
	"sync"
)

// health tracks the readiness of named components ("mqtt", "coap").
type health struct {
	mu    sync.Mutex
	ready map[string]bool
}

func newHealth() *health { return &health{ready: map[string]bool{}} }

// set records whether component name is ready.
func (h *health) set(name string, ok bool) {
	h.mu.Lock()
	h.ready[name] = ok
	h.mu.Unlock()
}

// notReady lists the components that are registered but not ready, sorted.
func (h *health) notReady() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for n, ok := range h.ready {
		if !ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// live reports why the bridge is not live: a CoAP listener that has stopped
// reading its socket. The CoAP endpoint's watchdog starts a new reader
// within seconds; /healthz fails meanwhile, so a supervisor sees the fault
// even when the restart succeeds, and can act when it does not.
func (b *Bridge) live() error {
	if f := b.liveCheck.Load(); f != nil {
		return (*f)()
	}
	return b.coap.live()
}
