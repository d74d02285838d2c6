package coapside

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/observe"
)

// TestClientObservesMorePeersThanItsPeerTable: a client registers with more
// devices at once than its peer table holds (MaxPeers 8, 20 devices), and
// no device acknowledges before every registration has arrived, as when
// the devices answer slowly or come up after the bridge. Every
// registration must go out, every observation be established and every
// confirmable notification be delivered and acknowledged: the table of a
// client holds only the peers it sends to itself, so a full one grows
// rather than failing a request with ErrTooManyPeers.
func TestClientObservesMorePeersThanItsPeerTable(t *testing.T) {
	const (
		tableSize = 8
		devices   = 20
		notes     = 3
	)
	eo := tolerantOpts()
	eo.AckTimeout = 2 * time.Second // no retransmission while the devices wait
	eo.MaxPeers = tableSize
	c, err := NewClient(ClientOptions{EndpointOptions: eo, LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type result struct {
		i   int
		o   *Observation
		err error
	}
	peers := make([]*rawPeer, devices)
	chans := make([]chan Notification, devices)
	results := make(chan result, devices)
	for i := range devices {
		peers[i] = newRawPeer(t, c.Endpoint().LocalAddr().(*net.UDPAddr))
		fn, ch := collect(notes + 1)
		chans[i] = ch
		go func() {
			req, _ := NewRequest(message.GET, fmt.Sprintf("coap://%s/s", peers[i].addr()), nil)
			o, err := c.ObserveRequest(ctx, req, fn, ObservationOptions{})
			results <- result{i, o, err}
		}()
	}
	// Every registration arrives before any is acknowledged.
	regs := make([]*message.Message, devices)
	for i, p := range peers {
		m, _, ok := p.recv(5 * time.Second)
		if !ok {
			select {
			case r := <-results:
				t.Fatalf("device %d: no registration; observation %d ended with %v", i, r.i, r.err)
			default:
				t.Fatalf("device %d: no registration", i)
			}
		}
		if v, ok := m.Options.Observe(); !ok || v != observe.Register {
			t.Fatalf("device %d: registration %v", i, m)
		}
		regs[i] = m
	}
	for i, p := range peers {
		ack := &message.Message{Type: message.Acknowledgement, Code: message.Content, MessageID: regs[i].MessageID, Token: regs[i].Token}
		ack.Options = ack.Options.SetUint(message.Observe, 1).SetUint(message.MaxAge, 60)
		ack.Payload = []byte("first")
		p.sendMsg(ack)
	}
	obs := make([]*Observation, devices)
	for range devices {
		r := <-results
		if r.err != nil {
			t.Fatalf("observation %d: %v", r.i, r.err)
		}
		obs[r.i] = r.o
	}
	defer func() {
		for _, o := range obs {
			o.end(ErrCanceled)
			o.Wait()
		}
	}()
	for i := range devices {
		if n := nextNote(t, chans[i]); string(n.Payload) != "first" {
			t.Fatalf("device %d: first %q", i, n.Payload)
		}
	}
	// Confirmable notifications from every device, interleaved.
	for k := range notes {
		for i, p := range peers {
			m := &message.Message{Type: message.Confirmable, Code: message.Content, MessageID: uint16(1000 + k), Token: regs[i].Token, Payload: []byte(fmt.Sprint(k))}
			m.Options = m.Options.SetUint(message.Observe, uint32(2+k)).SetUint(message.MaxAge, 60)
			p.sendMsg(m)
		}
		for i, p := range peers {
			a := p.mustRecv(5 * time.Second)
			for a.Type == message.Confirmable && a.MessageID == regs[i].MessageID {
				a = p.mustRecv(5 * time.Second) // a registration sent again
			}
			if a.Type != message.Acknowledgement || a.MessageID != uint16(1000+k) {
				t.Fatalf("device %d: notification %d answered with %v", i, k, a)
			}
			if n := nextNote(t, chans[i]); string(n.Payload) != fmt.Sprint(k) {
				t.Fatalf("device %d: notification %q, want %d", i, n.Payload, k)
			}
		}
	}
}
