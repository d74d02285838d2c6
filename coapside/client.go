package coapside

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
)

// ClientOptions configures a Client.
type ClientOptions struct {
	EndpointOptions
	// Conn is the transport (for example a DTLS PacketConn); nil opens a UDP
	// socket on LocalAddr. The client owns it either way.
	Conn net.PacketConn
	// LocalAddr is the local UDP address when Conn and Endpoint are nil
	// (":0").
	LocalAddr string
	// Endpoint, when set, is an existing message layer to send on instead
	// of a socket of the client's own: a Server's endpoint (see
	// Request.Endpoint), so a request to a device behind NAT leaves from
	// the address the device has been talking to. Responses are matched by
	// token there like any other. The client does not own it: Close leaves
	// it open, and EndpointOptions, Conn and LocalAddr are not used.
	Endpoint *Endpoint
	// Timeout bounds a request whose context has no deadline; default
	// MAX_TRANSMIT_WAIT (93 s with default parameters).
	Timeout time.Duration
	// Blockwise configures transparent block-wise transfers in Do (RFC 7959).
	Blockwise ClientBlockwiseOptions
}

// Client sends CoAP requests over one shared socket; it is safe for
// concurrent use by many goroutines.
type Client struct {
	ep      *Endpoint
	shared  bool // ep belongs to someone else (ClientOptions.Endpoint)
	timeout time.Duration
	bw      clientBlockwise
}

// Response is a CoAP response received by a Client.
type Response struct {
	Code      message.Code
	Type      message.Type
	MessageID uint16
	Token     []byte
	Options   message.Options
	Payload   []byte
	// Peer is the address the response came from.
	Peer net.Addr
}

// NewClient opens the client's socket (or adopts opts.Conn) and starts its
// message layer. Close releases it.
func NewClient(opts ClientOptions) (*Client, error) {
	if ep := opts.Endpoint; ep != nil {
		return newClientOn(ep, opts, true)
	}
	conn := opts.Conn
	if conn == nil {
		laddr := opts.LocalAddr
		if laddr == "" {
			laddr = ":0"
		}
		c, err := net.ListenPacket("udp", laddr)
		if err != nil {
			return nil, fmt.Errorf("coap client: %w", err)
		}
		conn = c
	}
	return newClientOn(newEndpoint(conn, opts.EndpointOptions, nil), opts, false)
}

// newClientOn builds a client sending on ep; a client that owns ep closes
// it when it cannot be built.
func newClientOn(ep *Endpoint, opts ClientOptions, shared bool) (*Client, error) {
	t := opts.Timeout
	if t <= 0 {
		t = ep.p.maxTransmitWait
	}
	bw, err := newClientBlockwise(opts.Blockwise, ep.p.MaxMessageSize)
	if err != nil {
		if !shared {
			_ = ep.Close()
		}
		return nil, err
	}
	return &Client{ep: ep, shared: shared, timeout: t, bw: bw}, nil
}

// Endpoint returns the client's message layer (for Observe and block-wise).
func (c *Client) Endpoint() *Endpoint { return c.ep }

// Close stops the client and closes its socket; pending requests fail with
// ErrClosed. A client on a shared Endpoint (ClientOptions.Endpoint) leaves
// it open: its owner closes it.
func (c *Client) Close() error {
	if c.shared {
		return nil
	}
	return c.ep.Close()
}

// RequestOption adjusts a request built by Get, Post, Put or Delete.
type RequestOption func(*Request)

// NonConfirmable sends the request as NON (RFC 7252 §2.2).
func NonConfirmable() RequestOption { return func(r *Request) { r.Type = message.NonConfirmable } }

// WithAccept sets the Accept option.
func WithAccept(mt message.MediaType) RequestOption {
	return func(r *Request) { r.Options = r.Options.SetUint(message.Accept, uint32(mt)) }
}

// WithOption adds an option occurrence.
func WithOption(id message.OptionID, value []byte) RequestOption {
	return func(r *Request) { r.Options = r.Options.Add(id, value) }
}

// WithPeer sends to addr instead of the address in the URL (the URL still
// provides Uri-Host, Uri-Path and Uri-Query).
func WithPeer(addr net.Addr) RequestOption { return func(r *Request) { r.Peer = addr } }

func (c *Client) call(ctx context.Context, method message.Code, url string, mt *message.MediaType, payload []byte, opts []RequestOption) (*Response, error) {
	req, err := NewRequest(method, url, payload)
	if err != nil {
		return nil, err
	}
	if mt != nil {
		req.Options = req.Options.SetContentFormat(*mt)
	}
	for _, o := range opts {
		o(req)
	}
	return c.Do(ctx, req)
}

// Get sends a GET to url.
func (c *Client) Get(ctx context.Context, url string, opts ...RequestOption) (*Response, error) {
	return c.call(ctx, message.GET, url, nil, nil, opts)
}

// Post sends a POST with a payload of Content-Format mt.
func (c *Client) Post(ctx context.Context, url string, mt message.MediaType, payload []byte, opts ...RequestOption) (*Response, error) {
	return c.call(ctx, message.POST, url, &mt, payload, opts)
}

// Put sends a PUT with a payload of Content-Format mt.
func (c *Client) Put(ctx context.Context, url string, mt message.MediaType, payload []byte, opts ...RequestOption) (*Response, error) {
	return c.call(ctx, message.PUT, url, &mt, payload, opts)
}

// Delete sends a DELETE to url.
func (c *Client) Delete(ctx context.Context, url string, opts ...RequestOption) (*Response, error) {
	return c.call(ctx, message.DELETE, url, nil, nil, opts)
}

// Resolve returns the UDP address a request will be sent to.
func (c *Client) Resolve(ctx context.Context, req *Request) (net.Addr, error) {
	if req.Peer != nil {
		return req.Peer, nil
	}
	if req.URL == nil {
		return nil, fmt.Errorf("%w: request has neither Peer nor URL", ErrInvalidURL)
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", req.URL.Hostname())
	if err != nil || len(addrs) == 0 {
		return nil, fmt.Errorf("coap: resolve %q: %w", req.URL.Hostname(), err)
	}
	_, port, _ := net.SplitHostPort(uri.Addr(req.URL))
	pa, err := net.ResolveUDPAddr("udp", net.JoinHostPort(addrs[0].Unmap().String(), port))
	if err != nil {
		return nil, fmt.Errorf("coap: resolve: %w", err)
	}
	return pa, nil
}

// doOnce sends req and waits for its response, a transmission failure (ErrReset,
// ErrTimeout), or the end of ctx. Without a deadline on ctx the client's
// Timeout applies. A 4.01 Unauthorized with an Echo option makes it send
// the request once more with that Echo value (RFC 9175 §2.3): the server
// wants the client to prove its address, or the request's freshness.
func (c *Client) doOnce(ctx context.Context, req *Request) (*Response, error) {
	resp, err := c.exchangeOnce(ctx, req)
	if err != nil {
		return nil, err
	}
	echo, ok := echoChallenge(resp.Code, resp.Options)
	if !ok {
		return resp, nil
	}
	again := *req
	// A fresh token: the first exchange's registration of this one is
	// removed only after its response was handed over, so reusing it
	// could find it still registered (ErrTokenInUse).
	again.Token = nil
	again.Options = req.Options.Clone().SetEcho(echo)
	resp, err = c.exchangeOnce(ctx, &again)
	req.Token = again.Token
	return resp, err
}

// exchangeOnce sends req once and waits for its response.
func (c *Client) exchangeOnce(ctx context.Context, req *Request) (*Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	peer, err := c.Resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	if req.Type != message.NonConfirmable {
		req.Type = message.Confirmable
	}
	m := req.Message()
	type result struct {
		resp *message.Message
		from net.Addr
		err  error
	}
	ch := make(chan result, 1)
	stop, err := c.ep.Exchange(peer, m, func(resp *message.Message, from net.Addr, err error) bool {
		select {
		case ch <- result{resp, from, err}:
		default:
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	req.Token = m.Token
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, fmt.Errorf("coap %v %s: %w", req.Method, target(req, peer), res.err)
		}
		return &Response{
			Code: res.resp.Code, Type: res.resp.Type, MessageID: res.resp.MessageID,
			Token: res.resp.Token, Options: res.resp.Options, Payload: res.resp.Payload, Peer: res.from,
		}, nil
	case <-ctx.Done():
		sent := c.ep.exchangeSent(peer, m.Token)
		stop()
		if !sent {
			return nil, fmt.Errorf("coap %v %s: %w: %w", req.Method, target(req, peer), ErrNotSent, ctx.Err())
		}
		return nil, fmt.Errorf("coap %v %s: %w", req.Method, target(req, peer), ctx.Err())
	}
}

func target(req *Request, peer net.Addr) string {
	if req.URL != nil {
		return req.URL.String()
	}
	return peer.String()
}
