package coapside

import "github.com/coap-mqtt/bridge/coapside/message"

// No-Response option values (RFC 7967 §2.1): each bit declines one response
// class; 0 asks for every response.
//
//	bit 1 (value  2): not interested in 2.xx
//	bit 3 (value  8): not interested in 4.xx
//	bit 4 (value 16): not interested in 5.xx
const (
	noResponse2xx = 1 << 1
	noResponse4xx = 1 << 3
	noResponse5xx = 1 << 4
)

// noResponse reports whether the request options decline a response with
// code c by No-Response (RFC 7967 §2). A value that is not a valid uint is
// ignored like any malformed elective option (RFC 7252 §5.4.1).
func noResponse(req message.Options, c message.Code) bool {
	v, err := req.Uint(message.NoResponse)
	if err != nil || v == 0 {
		return false
	}
	switch c.Class() {
	case 2:
		return v&noResponse2xx != 0
	case 4:
		return v&noResponse4xx != 0
	case 5:
		return v&noResponse5xx != 0
	}
	return false
}

// suppress ends an exchange whose response the client declined with
// No-Response. The message layer still acknowledges a CON that has no ACK
// yet, with an empty ACK that a duplicate of the request gets again
// (RFC 7252 §4.5); a separate response or a NON response is not sent.
func (x *serverExchange) suppress(r *reader) {
	e := x.e
	if x.con && x.state.CompareAndSwap(exPending, exResponded) {
		e.sched.cancel(&x.timer)
		ack := appendEmpty(r.out[:0], message.Acknowledgement, x.msg.MessageID)
		r.out = ack
		e.dedup.complete(x.ref, ack)
		e.writeR(r, ack, &x.from)
		return
	}
	x.state.Store(exResponded)
}

// replySuppressed is suppress for replyDirect: it reports whether the
// answer code to m is declined, after sending the empty ACK a CON needs.
func (e *Endpoint) replySuppressed(r *reader, m *message.Message, from peerAddr, ref dedupRef, code message.Code) bool {
	if !noResponse(m.Options, code) {
		return false
	}
	if m.Type == message.Confirmable {
		ack := appendEmpty(r.out[:0], message.Acknowledgement, m.MessageID)
		r.out = ack
		e.dedup.complete(ref, ack)
		e.writeR(r, ack, &from)
	}
	return true
}
