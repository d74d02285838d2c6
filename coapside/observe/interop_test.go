package observe

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// TestLibcoapTimeObserve observes libcoap coap-server's /time with raw
// messages and checks that a Tracker accepts its notifications in order,
// then deregisters with GET Observe=1 and checks that notifications stop.
func TestLibcoapTimeObserve(t *testing.T) {
	conn, err := net.DialUDP("udp", nil, peer.StartCoapServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	token := []byte{0x0b, 0x5e}
	send := func(m *message.Message) {
		t.Helper()
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2048)
	// recv returns the next response carrying our token, ACKing CONs.
	recv := func(d time.Duration) *message.Message {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			_ = conn.SetReadDeadline(deadline)
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return nil
				}
				time.Sleep(50 * time.Millisecond) // server not up yet
				continue
			}
			m, err := message.Decode(append([]byte(nil), buf[:n]...))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if m.Type == message.Confirmable {
				send(&message.Message{Type: message.Acknowledgement, MessageID: m.MessageID})
			}
			if m.IsEmpty() || !bytes.Equal(m.Token, token) {
				continue
			}
			return m
		}
	}

	register := func(mid uint16, obs uint32) *message.Message {
		req := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: mid, Token: token}
		req.Options = req.Options.SetUint(message.Observe, obs).SetPath("/time")
		for range 20 {
			send(req)
			// Skip notifications still arriving; wait for the piggybacked
			// response to this request.
			for m := recv(300 * time.Millisecond); m != nil; m = recv(300 * time.Millisecond) {
				if m.Type == message.Acknowledgement && m.MessageID == mid {
					return m
				}
			}
		}
		t.Fatal("no response from coap-server")
		return nil
	}

	resp := register(1, Register)
	seq, ok := resp.Options.Observe()
	if resp.Code != message.Content || !ok {
		t.Fatalf("registration answered %v, observe=%v", resp.Code, ok)
	}
	var tr Tracker
	if v := tr.Check(seq, time.Now()); v != First {
		t.Fatalf("registration response judged %v", v)
	}
	for i := range 2 {
		m := recv(5 * time.Second)
		if m == nil {
			t.Fatalf("notification %d did not arrive", i)
		}
		seq, ok := m.Options.Observe()
		if !ok {
			t.Fatalf("notification %d without Observe: %v", i, m)
		}
		if v := tr.Check(seq, time.Now()); v != Accept {
			t.Fatalf("notification %d (seq %d) judged %v", i, seq, v)
		}
	}

	resp = register(2, Deregister)
	if _, ok := resp.Options.Observe(); ok || resp.Code != message.Content {
		t.Fatalf("deregistration answered with Observe: %v", resp)
	}
	// Notifications stop (one may have been in flight already).
	deadline := time.Now().Add(2500 * time.Millisecond)
	late := 0
	for time.Now().Before(deadline) {
		if m := recv(time.Until(deadline)); m != nil {
			if _, ok := m.Options.Observe(); ok {
				late++
			}
		}
	}
	if late > 1 {
		t.Fatalf("%d notifications after deregistration", late)
	}
}
