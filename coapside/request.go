package coapside

import (
	"context"
	"net"
	"net/url"
	"strings"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
)

// Request is a CoAP request: received by a server, or built with NewRequest
// and sent by a Client (like net/http's Request).
//
// On the server, Options and Payload may be retained after ServeCOAP
// returns: they reference a private copy of the datagram.
type Request struct {
	// Method is the request code (GET, POST, PUT, DELETE, FETCH, PATCH, iPATCH).
	Method message.Code
	// Type is Confirmable or NonConfirmable.
	Type message.Type
	// MessageID is the received message ID (server) or the last one sent (client).
	MessageID uint16
	// Token is the request token; a client picks a random one when empty.
	Token []byte
	// Options are the request options, sorted by number. On a client request
	// built by NewRequest they hold Uri-Host/Uri-Port/Uri-Path/Uri-Query.
	Options message.Options
	// Payload is the request body.
	Payload []byte
	// Peer is the sender (server), or the destination when set on a client
	// request (otherwise resolved from URL).
	Peer net.Addr
	// URL is the target of a client request; nil on a server.
	URL *url.URL

	ctx        context.Context
	ep         *Endpoint
	pathValues []pathValue
	pattern    string
	src        peerKey // the sender, as the endpoint keys it
	limit      int     // largest response datagram allowed; 0 for a verified source
}

type pathValue struct{ name, value string }

// NewRequest builds a client request for a coap:// URL (RFC 7252 §6.4).
// The request is confirmable; set Type to message.NonConfirmable for NON.
func NewRequest(method message.Code, rawURL string, payload []byte) (*Request, error) {
	u, opts, err := uri.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	return &Request{Method: method, Type: message.Confirmable, Options: opts, Payload: payload, URL: u}, nil
}

// Context returns the request's context: on the server it ends when the
// server stops; on the client it is the context given to Do.
func (r *Request) Context() context.Context {
	if r.ctx == nil {
		return context.Background()
	}
	return r.ctx
}

// WithContext returns a shallow copy of r with ctx.
func (r *Request) WithContext(ctx context.Context) *Request {
	r2 := *r
	r2.ctx = ctx
	return &r2
}

// Path returns the Uri-Path as "/a/b" ("/" when empty).
func (r *Request) Path() string { return r.Options.Path() }

// Queries returns the Uri-Query values ("k=v" strings) in order.
func (r *Request) Queries() []string { return r.Options.Queries() }

// Query returns the value of the first Uri-Query "key=value" (or "key") for key.
func (r *Request) Query(key string) (string, bool) {
	for _, o := range r.Options {
		if o.ID != message.URIQuery {
			continue
		}
		k, v, _ := strings.Cut(string(o.Value), "=")
		if k == key {
			return v, true
		}
	}
	return "", false
}

// PathValue returns the value captured by the mux wildcard {name} or
// {name...}, or "" (like net/http).
func (r *Request) PathValue(name string) string {
	for _, pv := range r.pathValues {
		if pv.name == name {
			return pv.value
		}
	}
	return ""
}

// SetPathValue sets a wildcard value (for middleware and tests).
func (r *Request) SetPathValue(name, value string) {
	for i := range r.pathValues {
		if r.pathValues[i].name == name {
			r.pathValues[i].value = value
			return
		}
	}
	r.pathValues = append(r.pathValues, pathValue{name, value})
}

// Pattern returns the mux pattern that matched the request, or "".
func (r *Request) Pattern() string { return r.pattern }

// Endpoint returns the endpoint the request arrived on (server side), so a
// handler can later send notifications to r.Peer (RFC 7641).
func (r *Request) Endpoint() *Endpoint { return r.ep }

// Conn returns the PacketConn the request arrived on, or nil.
func (r *Request) Conn() net.PacketConn {
	if r.ep == nil {
		return nil
	}
	return r.ep.conn
}

// PeerIdentityProvider is implemented by a PacketConn that authenticates
// peers (the DTLS transport): it returns the PSK identity or certificate
// subject of an address.
type PeerIdentityProvider interface {
	PeerIdentity(net.Addr) (string, bool)
}

// PeerIdentity returns the authenticated identity of r.Peer when the
// transport provides one (DTLS), or "", false.
func (r *Request) PeerIdentity() (string, bool) {
	if p, ok := r.Conn().(PeerIdentityProvider); ok && r.Peer != nil {
		return p.PeerIdentity(r.Peer)
	}
	return "", false
}

// Message builds the request message (without message ID).
func (r *Request) Message() *message.Message {
	return &message.Message{
		Type:    r.Type,
		Code:    r.Method,
		Token:   r.Token,
		Options: r.Options,
		Payload: r.Payload,
	}
}
