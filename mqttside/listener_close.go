package mqttside

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// closingListener is a listener of the embedded broker whose Close
// disconnects its clients itself. The broker's own way (by
// Clients.GetByListener) read-locks the client table twice: a client
// that ends in between (its removal waiting for the write lock) blocks
// the second read lock behind it, and the shutdown hangs for good.
type closingListener struct {
	listeners.Listener
	srv *mqtt.Server
}

// Close stops the listener and disconnects the clients that came
// through it; the broker's closer is not used.
func (l closingListener) Close(listeners.CloseFn) {
	l.Listener.Close(func(id string) {
		for _, cl := range l.srv.Clients.GetAll() { // one read lock
			if cl.Net.Listener == id && !cl.Closed() {
				_ = l.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
	})
}
