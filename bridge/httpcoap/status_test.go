package httpcoap

import (
	"net/http"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// TestStatusEveryCode checks Status for all 256 codes: the named ones against
// RFC 8075 §7 Table 2 (written out again here, so a slip in statusTable
// shows), the others against their class default.
func TestStatusEveryCode(t *testing.T) {
	type want struct{ bare, payload, conditional int }
	same := func(s int) want { return want{s, s, s} }
	named := map[message.Code]want{
		message.Created:                  same(201),
		message.Deleted:                  {bare: 204, payload: 200, conditional: 204},
		message.Valid:                    {bare: 200, payload: 200, conditional: 304},
		message.Changed:                  {bare: 204, payload: 200, conditional: 204},
		message.Content:                  same(200),
		message.Continue:                 same(502), // note 10: never translated
		message.BadRequest:               same(400),
		message.Unauthorized:             same(403), // note 5
		message.BadOption:                same(500), // note 6
		message.Forbidden:                same(403),
		message.NotFound:                 same(404),
		message.MethodNotAllowed:         same(400), // note 7
		message.NotAcceptable:            same(406),
		message.RequestEntityIncomplete:  same(502), // note 10
		message.Conflict:                 same(409),
		message.PreconditionFailed:       same(412),
		message.RequestEntityTooLarge:    same(413),
		message.UnsupportedContentFormat: same(415),
		message.UnprocessableEntity:      same(422),
		message.TooManyRequests:          same(429),
		message.InternalServerError:      same(500),
		message.NotImplemented:           same(501),
		message.BadGateway:               same(502),
		message.ServiceUnavailable:       same(503),
		message.GatewayTimeout:           same(504),
		message.ProxyingNotSupported:     same(502), // note 9
	}
	for i := 0; i < 256; i++ {
		c := message.Code(i)
		w, ok := named[c]
		if !ok {
			switch c.Class() {
			case 2:
				w = same(http.StatusOK)
			case 4:
				w = same(http.StatusBadRequest)
			case 5:
				w = same(http.StatusInternalServerError)
			default: // requests, Empty, classes 1, 3, 6, 7: not understood
				w = same(http.StatusBadGateway)
			}
		}
		if got := Status(c, false, false); got != w.bare {
			t.Errorf("Status(%v) = %d, want %d", c, got, w.bare)
		}
		if got := Status(c, true, false); got != w.payload {
			t.Errorf("Status(%v, payload) = %d, want %d", c, got, w.payload)
		}
		if got := Status(c, false, true); got != w.conditional {
			t.Errorf("Status(%v, conditional) = %d, want %d", c, got, w.conditional)
		}
	}
}
