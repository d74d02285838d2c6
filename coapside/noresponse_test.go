package coapside

import (
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// noResponseMux answers /ok 2.04, /bad 4.00, /busy 5.03 and /slow 2.04
// after the separate-response deadline, then signals slowDone if not nil.
func noResponseMux(slowDone chan<- struct{}) *ServeMux {
	mux := NewServeMux()
	mux.HandleFunc("POST /ok", func(w ResponseWriter, r *Request) { w.SetCode(message.Changed) })
	mux.HandleFunc("POST /bad", func(w ResponseWriter, r *Request) { w.SetCode(message.BadRequest) })
	mux.HandleFunc("POST /busy", func(w ResponseWriter, r *Request) { w.SetCode(message.ServiceUnavailable) })
	mux.HandleFunc("POST /slow", func(w ResponseWriter, r *Request) {
		time.Sleep(150 * time.Millisecond) // past SeparateAfter
		w.SetCode(message.Changed)
		if slowDone != nil {
			slowDone <- struct{}{}
		}
	})
	return mux
}

func noResponseReq(typ message.Type, mid uint16, path string, nr int) *message.Message {
	m := &message.Message{Type: typ, Code: message.POST, MessageID: mid, Token: []byte{byte(mid >> 8), byte(mid)}}
	m.Options = m.Options.SetPath(path)
	if nr >= 0 {
		m.Options = m.Options.SetUint(message.NoResponse, uint32(nr))
	}
	return m
}

// TestNoResponseNON sends NON requests with No-Response: a declined class
// gets no response, any other class does. A marker request without the
// option is answered, and must be the first thing that comes back.
func TestNoResponseNON(t *testing.T) {
	_, addr := startServer(t, noResponseMux(nil), ServerOptions{EndpointOptions: fastOpts()})
	p := newRawPeer(t, addr)
	tests := []struct {
		path string
		nr   int
		want message.Code // Empty: suppressed
	}{
		{"/ok", 26, message.Empty},
		{"/bad", 26, message.Empty},
		{"/busy", 26, message.Empty},
		{"/ok", 2, message.Empty},
		{"/bad", 8, message.Empty},
		{"/busy", 16, message.Empty},
		{"/ok", 24, message.Changed},
		{"/bad", 18, message.BadRequest},
		{"/busy", 10, message.ServiceUnavailable},
		{"/ok", 0, message.Changed}, // 0: interested in every response
		{"/nowhere", 8, message.Empty},
		{"/nowhere", 2, message.NotFound},
	}
	mid := uint16(0x100)
	for _, tt := range tests {
		mid++
		p.sendMsg(noResponseReq(message.NonConfirmable, mid, tt.path, tt.nr))
		if tt.want == message.Empty {
			mid++
			p.sendMsg(noResponseReq(message.NonConfirmable, mid, "/ok", -1))
		}
		got := p.mustRecv(2 * time.Second)
		wantMID := mid // the marker's token when suppressed
		if tt.want == message.Empty {
			if string(got.Token) != string([]byte{byte(wantMID >> 8), byte(wantMID)}) {
				t.Fatalf("%s No-Response %d: got %v for token %x, want no response", tt.path, tt.nr, got.Code, got.Token)
			}
			continue
		}
		if got.Code != tt.want || string(got.Token) != string([]byte{byte(mid >> 8), byte(mid)}) {
			t.Fatalf("%s No-Response %d: got %v token %x, want %v", tt.path, tt.nr, got.Code, got.Token, tt.want)
		}
	}
	p.expectSilence(100 * time.Millisecond)
}

// TestNoResponseCON sends CON requests with No-Response 26: the message
// layer still acknowledges each with an empty ACK (also to a duplicate and
// after a separate-response deadline), and no response follows.
func TestNoResponseCON(t *testing.T) {
	slowDone := make(chan struct{}, 1)
	_, addr := startServer(t, noResponseMux(slowDone), ServerOptions{EndpointOptions: fastOpts()})
	p := newRawPeer(t, addr)
	for i, path := range []string{"/ok", "/bad", "/busy", "/slow"} {
		mid := uint16(0x200 + i)
		req := noResponseReq(message.Confirmable, mid, path, 26)
		p.sendMsg(req)
		ack := p.mustRecv(2 * time.Second)
		if ack.Type != message.Acknowledgement || ack.Code != message.Empty || ack.MessageID != mid {
			t.Fatalf("%s: got %v %v MID %#x, want an empty ACK for %#x", path, ack.Type, ack.Code, ack.MessageID, mid)
		}
		if path == "/slow" {
			<-slowDone // a separate response would follow now
		}
		p.sendMsg(req) // a retransmission
		dup := p.mustRecv(2 * time.Second)
		if dup.Type != message.Acknowledgement || dup.Code != message.Empty || dup.MessageID != mid {
			t.Fatalf("%s duplicate: got %v %v MID %#x, want the empty ACK again", path, dup.Type, dup.Code, dup.MessageID)
		}
	}
	// Without the option the response is piggybacked as usual.
	p.sendMsg(noResponseReq(message.Confirmable, 0x2ff, "/bad", 0))
	if got := p.mustRecv(2 * time.Second); got.Type != message.Acknowledgement || got.Code != message.BadRequest {
		t.Fatalf("No-Response 0: %v %v, want ACK 4.00", got.Type, got.Code)
	}
	p.expectSilence(100 * time.Millisecond)
}

// TestNoResponseDirectReplies covers answers given without a handler: an
// unrecognized critical option (4.02) and Proxy-Uri (5.05).
func TestNoResponseDirectReplies(t *testing.T) {
	_, addr := startServer(t, noResponseMux(nil), ServerOptions{EndpointOptions: fastOpts()})
	p := newRawPeer(t, addr)
	bad := noResponseReq(message.Confirmable, 0x301, "/ok", 8)
	bad.Options = bad.Options.Add(message.OptionID(9), []byte{1}) // critical, unknown
	p.sendMsg(bad)
	if got := p.mustRecv(2 * time.Second); got.Type != message.Acknowledgement || got.Code != message.Empty {
		t.Fatalf("CON with a bad option and No-Response 8: %v %v, want an empty ACK", got.Type, got.Code)
	}
	proxy := noResponseReq(message.NonConfirmable, 0x302, "/ok", 16)
	proxy.Options = proxy.Options.SetString(message.ProxyURI, "coap://example.com/x")
	p.sendMsg(proxy)
	proxy2 := noResponseReq(message.NonConfirmable, 0x303, "/ok", 8)
	proxy2.Options = proxy2.Options.SetString(message.ProxyURI, "coap://example.com/x")
	p.sendMsg(proxy2)
	if got := p.mustRecv(2 * time.Second); got.Code != message.ProxyingNotSupported || got.Token[1] != 0x03 {
		t.Fatalf("NON Proxy-Uri: %v token %x, want 5.05 only for the request that did not decline 5.xx", got.Code, got.Token)
	}
	p.expectSilence(100 * time.Millisecond)
}
