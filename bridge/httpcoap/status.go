package httpcoap

import (
	"net/http"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// statusTable is RFC 8075 §7 Table 2, plus the codes later CoAP
// specifications registered with an HTTP counterpart. Codes whose mapping
// depends on the payload or the request (2.02, 2.03, 2.04) are decided in
// Status.
var statusTable = map[message.Code]int{
	message.Created:                  http.StatusCreated, // note 1
	message.Content:                  http.StatusOK,
	message.BadRequest:               http.StatusBadRequest,
	message.Unauthorized:             http.StatusForbidden, // note 5: no WWW-Authenticate in CoAP
	message.BadOption:                http.StatusInternalServerError,
	message.Forbidden:                http.StatusForbidden,
	message.NotFound:                 http.StatusNotFound,
	message.MethodNotAllowed:         http.StatusBadRequest, // note 7: the allowed methods are unknown
	message.NotAcceptable:            http.StatusNotAcceptable,
	message.PreconditionFailed:       http.StatusPreconditionFailed,
	message.RequestEntityTooLarge:    http.StatusRequestEntityTooLarge, // note 11
	message.UnsupportedContentFormat: http.StatusUnsupportedMediaType,
	message.Conflict:                 http.StatusConflict,            // RFC 8132
	message.UnprocessableEntity:      http.StatusUnprocessableEntity, // RFC 8132
	message.TooManyRequests:          http.StatusTooManyRequests,     // RFC 8516
	message.InternalServerError:      http.StatusInternalServerError,
	message.NotImplemented:           http.StatusNotImplemented,
	message.BadGateway:               http.StatusBadGateway,
	message.ServiceUnavailable:       http.StatusServiceUnavailable, // note 8: Max-Age → Retry-After
	message.GatewayTimeout:           http.StatusGatewayTimeout,
	message.ProxyingNotSupported:     http.StatusBadGateway, // note 9
}

// Status returns the HTTP status code for a CoAP response code, per RFC
// 8075 §7 Table 2:
//
//   - 2.02 Deleted and 2.04 Changed are 200 OK with a payload and 204 No
//     Content without (note 2);
//   - 2.03 Valid is 304 Not Modified when the HTTP request was conditional
//     (note 3) and 200 OK otherwise (note 4);
//   - 4.01 Unauthorized is 403 Forbidden (note 5), 4.02 Bad Option 500
//     (note 6: the bridge cannot tell that a client header caused it), 4.05
//     Method Not Allowed 400 (note 7), 5.05 Proxying Not Supported 502;
//   - 2.31 Continue and 4.08 Request Entity Incomplete belong to a
//     block-wise transfer and are never translated (note 10): reaching the
//     HTTP side they mean the transfer failed, 502 Bad Gateway;
//   - other codes of class 2, 4 and 5 get the class default 200, 400 and
//     500, and anything that is not a response code 502 (RFC 7252 §10.2:
//     a result that is not understood).
func Status(c message.Code, hasPayload, conditional bool) int {
	switch c {
	case message.Deleted, message.Changed:
		if hasPayload {
			return http.StatusOK
		}
		return http.StatusNoContent
	case message.Valid:
		if conditional {
			return http.StatusNotModified
		}
		return http.StatusOK
	case message.Continue, message.RequestEntityIncomplete:
		return http.StatusBadGateway
	}
	if s, ok := statusTable[c]; ok {
		return s
	}
	switch c.Class() {
	case 2:
		return http.StatusOK
	case 4:
		return http.StatusBadRequest
	case 5:
		return http.StatusInternalServerError
	}
	return http.StatusBadGateway
}
