package mqttside

import (
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// copyingStore wraps Paho's ordered memory store so that the store never
// shares a PUBLISH packet with the network writer. Paho writes header
// fields into a packet while sending it, and on reconnect its resume sets
// the DUP flag on stored packets; a message published in that moment would
// otherwise be the same object on both sides. Put stores a copy and Get
// returns one. Payload slices are shared: nothing writes to them.
type copyingStore struct {
	paho.Store
}

func newCopyingStore() *copyingStore {
	return &copyingStore{Store: paho.NewOrderedMemoryStore()}
}

// Put stores a copy of a PUBLISH packet, other packets as they are.
func (s *copyingStore) Put(key string, cp packets.ControlPacket) {
	s.Store.Put(key, copyPublish(cp))
}

// Get returns a copy of a stored PUBLISH packet.
func (s *copyingStore) Get(key string) packets.ControlPacket {
	return copyPublish(s.Store.Get(key))
}

func copyPublish(cp packets.ControlPacket) packets.ControlPacket {
	if p, ok := cp.(*packets.PublishPacket); ok && p != nil {
		c := *p
		return &c
	}
	return cp
}
