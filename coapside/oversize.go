package coapside

import (
	"strconv"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// rejectOversize handles a datagram larger than MaxMessageSize, of which
// only the first MaxMessageSize+1 bytes were read. Its options cannot be
// trusted, but its header and token can: a request is answered 4.13
// Request Entity Too Large (RFC 7252 §5.9.2.9) — piggybacked on the ACK of
// a CON, as a NON to a NON — so the client learns why, instead of
// retransmitting into silence. Anything else is dropped. Either way it is
// counted in Stats.Oversize.
func (e *Endpoint) rejectOversize(r *reader, data []byte, from peerAddr) {
	e.stats.Oversize.Add(1)
	h, err := message.ParseHeader(data)
	if err != nil || !h.Code.IsRequest() || h.TokenLen > 8 || len(data) < 4+h.TokenLen ||
		(h.Type != message.Confirmable && h.Type != message.NonConfirmable) {
		e.log.Debug("coap oversize datagram dropped", "peer", from.netAddr().String(), "limit", e.p.MaxMessageSize)
		return
	}
	e.log.Debug("coap oversize request rejected", "peer", from.netAddr().String(), "limit", e.p.MaxMessageSize)
	resp := message.Message{
		Code:    message.RequestEntityTooLarge,
		Token:   append([]byte(nil), data[4:4+h.TokenLen]...),
		Payload: []byte("request larger than " + strconv.Itoa(e.p.MaxMessageSize) + " bytes"),
	}
	if a := e.amp(); a != nil {
		// The request is larger than MaxMessageSize, so this short answer
		// is far below the bound; it is bounded all the same.
		resp = e.bound(resp, a.factor*len(data), from.key)
	}
	if h.Type == message.Confirmable {
		resp.Type = message.Acknowledgement
		resp.MessageID = h.MessageID
		out, err := resp.AppendBinary(r.out[:0])
		if err != nil {
			return
		}
		r.out = out
		e.writeR(r, out, &from)
		return
	}
	resp.Type = message.NonConfirmable
	_, _ = e.transmit(from, &resp, nil, nstartNone, nil)
}
