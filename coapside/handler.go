package coapside

import (
	"errors"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// ResponseWriter builds the response to a request. The response is sent when
// ServeCOAP returns: piggybacked on the ACK of a CON, or as a separate
// response if the handler took longer than SeparateAfter (RFC 7252 §5.2).
type ResponseWriter interface {
	// SetCode sets the response code. Without it the code is 2.05 Content
	// for GET/FETCH, 2.02 Deleted for DELETE and 2.04 Changed otherwise.
	SetCode(code message.Code)
	// Options returns the response options for modification.
	Options() *message.Options
	// SetContentFormat sets the Content-Format option.
	SetContentFormat(mt message.MediaType)
	// Write appends to the response payload.
	Write(p []byte) (int, error)
}

// Handler responds to a CoAP request.
type Handler interface {
	ServeCOAP(w ResponseWriter, r *Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(w ResponseWriter, r *Request)

// ServeCOAP calls f(w, r).
func (f HandlerFunc) ServeCOAP(w ResponseWriter, r *Request) { f(w, r) }

// Middleware wraps a Handler.
type Middleware func(Handler) Handler

// Chain applies middleware so the first one is outermost.
func Chain(h Handler, mw ...Middleware) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// Error writes err as the response: a message.Code found in err's chain is
// used as the code, anything else becomes 5.00; err's text is the diagnostic
// payload (RFC 7252 §5.5.2).
func Error(w ResponseWriter, err error) {
	code := message.InternalServerError
	var c message.Code
	if errors.As(err, &c) && c.IsError() {
		code = c
	}
	w.SetCode(code)
	_, _ = w.Write([]byte(err.Error()))
}

// NotFound replies 4.04 Not Found.
func NotFound(w ResponseWriter, _ *Request) { w.SetCode(message.NotFound) }

// NotFoundHandler returns a handler that replies 4.04.
func NotFoundHandler() Handler { return HandlerFunc(NotFound) }
