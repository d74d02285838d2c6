package mqttside

import (
	"strings"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// copyingStore wraps Paho's ordered memory store (which resends stored
// QoS 1/2 messages in their original order after a reconnect) for two
// reasons:
//
//   - The store never shares a PUBLISH packet with the network writer.
//     Paho writes header fields into a packet while sending it, and on
//     reconnect its resume sets the DUP flag on stored packets; a message
//     published in that moment would otherwise be the same object on both
//     sides. Put stores a copy and Get returns one. Payload slices are
//     shared: nothing writes to them.
//   - It tells the dispatcher when the messages in flight at a disconnect
//     have been resent and acknowledged, so that newer messages do not
//     overtake them [MQTT-4.6.0-1].
type copyingStore struct {
	paho.Store

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when an entry goes away
	resume  chan struct{} // closed when Paho's resume has read the store
}

// outboundPrefix marks Paho's keys for messages we sent.
const outboundPrefix = "o."

func newCopyingStore() *copyingStore {
	resumed := make(chan struct{})
	close(resumed)
	return &copyingStore{Store: paho.NewOrderedMemoryStore(), changed: make(chan struct{}), resume: resumed}
}

// expectResume is called before each connection attempt. After a
// connection is up Paho resumes the session: it lists the store once (All)
// and resends what it finds, completing the tokens of those messages. A
// message published or subscription made before that listing would be
// taken over by the resume and its token completed early, so onConnect
// waits for resumed before publishing or subscribing.
func (s *copyingStore) expectResume() {
	s.mu.Lock()
	select {
	case <-s.resume:
		s.resume = make(chan struct{})
	default:
	}
	s.mu.Unlock()
}

// resumed returns a channel closed once Paho's resume listed the store.
func (s *copyingStore) resumed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resume
}

// All lists the stored keys; with ConnectRetry off only Paho's resume
// calls it, so it marks the resume as under way.
func (s *copyingStore) All() []string {
	keys := s.Store.All()
	s.mu.Lock()
	select {
	case <-s.resume:
	default:
		close(s.resume)
	}
	s.mu.Unlock()
	return keys
}

// Put stores a copy of a PUBLISH packet, other packets as they are.
func (s *copyingStore) Put(key string, cp packets.ControlPacket) {
	s.Store.Put(key, copyPublish(cp))
}

// Get returns a copy of a stored PUBLISH packet.
func (s *copyingStore) Get(key string) packets.ControlPacket {
	return copyPublish(s.Store.Get(key))
}

// Del removes an entry (Paho calls it when a flow completes).
func (s *copyingStore) Del(key string) {
	s.Store.Del(key)
	s.notify()
}

// Reset removes every entry.
func (s *copyingStore) Reset() {
	s.Store.Reset()
	s.notify()
}

func (s *copyingStore) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// outbound returns the keys of outgoing flows not yet complete, and a
// channel closed at the next removal.
func (s *copyingStore) outbound() (map[string]bool, <-chan struct{}) {
	s.mu.Lock()
	ch := s.changed
	s.mu.Unlock()
	keys := make(map[string]bool)
	for _, k := range s.Store.All() {
		if strings.HasPrefix(k, outboundPrefix) {
			keys[k] = true
		}
	}
	return keys, ch
}

func copyPublish(cp packets.ControlPacket) packets.ControlPacket {
	if p, ok := cp.(*packets.PublishPacket); ok && p != nil {
		c := *p
		return &c
	}
	return cp
}
