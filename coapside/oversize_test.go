package coapside

import (
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// TestOversizeRequestAnswered sends requests larger than MaxMessageSize (a
// thousand Uri-Path segments): a CON gets 4.13 piggybacked on its ACK, a
// NON a NON 4.13, each with the request's token; an oversize response is
// dropped. Every one is counted.
func TestOversizeRequestAnswered(t *testing.T) {
	s, addr := startServer(t, noResponseMux(nil), ServerOptions{EndpointOptions: fastOpts()})
	p := newRawPeer(t, addr)
	big := func(typ message.Type, code message.Code, mid uint16) *message.Message {
		m := &message.Message{Type: typ, Code: code, MessageID: mid, Token: []byte{0xab, byte(mid)}}
		for range 1000 {
			m.Options = m.Options.AddString(message.URIPath, "a")
		}
		return m
	}
	p.sendMsg(big(message.Confirmable, message.POST, 0x501))
	got := p.mustRecv(2 * time.Second)
	if got.Type != message.Acknowledgement || got.MessageID != 0x501 || got.Code != message.RequestEntityTooLarge || string(got.Token) != "\xab\x01" {
		t.Fatalf("oversize CON: %v %v MID %#x token %x, want ACK 4.13", got.Type, got.Code, got.MessageID, got.Token)
	}
	p.sendMsg(big(message.NonConfirmable, message.PUT, 0x502))
	got = p.mustRecv(2 * time.Second)
	if got.Type != message.NonConfirmable || got.Code != message.RequestEntityTooLarge || string(got.Token) != "\xab\x02" {
		t.Fatalf("oversize NON: %v %v token %x, want NON 4.13", got.Type, got.Code, got.Token)
	}
	p.sendMsg(big(message.Confirmable, message.Content, 0x503)) // not a request
	p.expectSilence(100 * time.Millisecond)
	if n := s.Stats().Oversize; n != 3 {
		t.Errorf("Oversize %d, want 3", n)
	}
}
