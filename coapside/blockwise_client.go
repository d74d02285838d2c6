package coapside

import (
	"context"
	"fmt"

	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// ClientBlockwiseOptions configures the client's block-wise transfers
// (RFC 7959). Zero values take the defaults.
type ClientBlockwiseOptions struct {
	// Disable makes Do send requests as they are and return responses
	// block by block.
	Disable bool
	// BlockSize is the block size for Block1 request bodies and the largest
	// asked for in Block2 (16..1024). Default: the largest that fits
	// MaxMessageSize, at most 1024.
	BlockSize int
	// MaxBodySize bounds a reassembled Block2 response body (1 MiB).
	MaxBodySize int
}

// clientBlockwise is the normalized ClientBlockwiseOptions.
type clientBlockwise struct {
	disable bool
	size    int
	maxBody int
}

func newClientBlockwise(o ClientBlockwiseOptions, maxMessage int) (clientBlockwise, error) {
	b := clientBlockwise{disable: o.Disable, size: o.BlockSize, maxBody: o.MaxBodySize}
	if b.size == 0 {
		b.size = blockSizeFor(maxMessage)
	}
	if _, err := block.SZXForSize(b.size); err != nil {
		return b, fmt.Errorf("coap client: %w", err)
	}
	if b.maxBody <= 0 {
		b.maxBody = block.DefaultMaxBodySize
	}
	return b, nil
}

// Do sends req and waits for its response, a transmission failure (ErrReset,
// ErrTimeout), or the end of ctx. Without a deadline on ctx the client's
// Timeout applies to each exchange.
//
// Block-wise transfers are transparent (RFC 7959): a payload larger than the
// block size is sent as Block1 blocks through 2.31 Continue answers, and a
// response carrying Block2 is completed with follow-up requests, so the
// returned Response holds the whole body. A request that already carries
// Block1 or Block2 is sent as it is, for callers driving blocks themselves.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	if c.bw.disable || req.Options.Has(message.Block1) || req.Options.Has(message.Block2) {
		return c.doOnce(ctx, req)
	}
	if c.bw.size < block.MaxSize && (req.Method == message.GET || req.Method == message.FETCH) {
		// RFC 7959 §2.4: a client with a smaller block size proposes it in
		// the first request (early negotiation).
		szx, _ := block.SZXForSize(c.bw.size)
		v, _ := block.Option{SZX: szx}.Value()
		req = blockPart(req, req.Options.Clone().SetUint(message.Block2, v), req.Payload)
		req.Token = nil
	}
	var resp *Response
	var err error
	if len(req.Payload) > c.bw.size {
		resp, err = c.sendBlock1(ctx, req)
	} else {
		resp, err = c.doOnce(ctx, req)
	}
	if err != nil || !resp.Options.Has(message.Block2) {
		return resp, err
	}
	if echo, ok := resp.Options.Echo(); ok && resp.Code.IsSuccess() && len(req.Payload) <= c.bw.size {
		// RFC 9175 §2.4: the server cut its answer to small blocks as it
		// does not know this client's address yet, and sent an Echo value
		// to prove it with. Asked again with it, it answers in full-size
		// blocks.
		again, err := c.doOnce(ctx, blockPart(req, req.Options.Clone().SetEcho(echo), req.Payload))
		if err != nil {
			return nil, err
		}
		if !again.Options.Has(message.Block2) {
			return again, nil
		}
		resp = again
	}
	return c.fetchBlock2(ctx, req, resp)
}

// blockPart copies req for one block: a fresh token, the given payload
// and options.
func blockPart(req *Request, opts message.Options, payload []byte) *Request {
	r := *req
	r.Token = nil
	r.Options = opts
	r.Payload = payload
	return &r
}

// sendBlock1 sends req's body in Block1 blocks (RFC 7959 §2.3) and returns
// the response to the last block, or the first response that is not 2.31.
func (c *Client) sendBlock1(ctx context.Context, req *Request) (*Response, error) {
	s, err := block.NewSender(req.Payload, c.bw.size)
	if err != nil {
		return nil, fmt.Errorf("coap %v: %w", req.Method, err)
	}
	// RFC 9175 §3: a Request-Tag keeps this body apart from another one the
	// client sends to the same resource at the same time (the server keys
	// Block1 transfers by it). The option is elective, so servers that do
	// not know it ignore it.
	tag := NewToken()[:4]
	for first := true; ; first = false {
		opt, chunk := s.Current()
		v, err := opt.Value()
		if err != nil {
			return nil, fmt.Errorf("coap %v: %w", req.Method, err)
		}
		opts := req.Options.Clone().SetUint(message.Block1, v)
		if !opts.Has(message.RequestTag) {
			opts = opts.Set(message.RequestTag, tag)
		}
		if first {
			// RFC 7959 §4: Size1 announces the body size with the first block.
			opts = opts.SetUint(message.Size1, s.Size1())
		}
		resp, err := c.doOnce(ctx, blockPart(req, opts, chunk))
		if err != nil {
			return nil, err
		}
		if !opt.More || resp.Code != message.Continue {
			return resp, nil
		}
		raw, ok := resp.Options.Get(message.Block1)
		if !ok {
			return nil, fmt.Errorf("coap %v: %w: 2.31 Continue without Block1", req.Method, ErrBlockwise)
		}
		got, err := block.ParseBytes(raw)
		if err != nil {
			return nil, fmt.Errorf("coap %v: %w: %w", req.Method, ErrBlockwise, err)
		}
		if err := s.Continue(got); err != nil {
			return nil, fmt.Errorf("coap %v: %w: %w", req.Method, ErrBlockwise, err)
		}
	}
}

// fetchBlock2 completes a Block2 response by asking for the following blocks
// with the original request (RFC 7959 §2.4); Observe is not repeated
// (RFC 7959 §3.4).
func (c *Client) fetchBlock2(ctx context.Context, req *Request, resp *Response) (*Response, error) {
	rcv, err := block.NewReceiver(block.ReceiverOptions{MaxBodySize: c.bw.maxBody, BlockSize: c.bw.size})
	if err != nil {
		return nil, err
	}
	base := req.Options.Clone().Del(message.Observe).Del(message.Block1).Del(message.Size1)
	first := resp
	for {
		br, err := blockResponse(resp)
		if err != nil {
			return nil, fmt.Errorf("coap %v: %w: %w", req.Method, ErrBlockwise, err)
		}
		step, err := rcv.Add(br)
		if err != nil {
			return nil, fmt.Errorf("coap %v: %w: %w", req.Method, ErrBlockwise, err)
		}
		if step.Done {
			out := *first
			out.Options = first.Options.Clone().Del(message.Block2)
			out.Payload = step.Body
			return &out, nil
		}
		v, err := step.Next.Value()
		if err != nil {
			return nil, fmt.Errorf("coap %v: %w: %w", req.Method, ErrBlockwise, err)
		}
		resp, err = c.doOnce(ctx, blockPart(req, base.Clone().SetUint(message.Block2, v), nil))
		if err != nil {
			return nil, err
		}
		if !resp.Code.IsSuccess() {
			return nil, fmt.Errorf("coap %v: %w: block %v answered %w", req.Method, ErrBlockwise, step.Next, resp.Code)
		}
	}
}

// blockResponse extracts what the Block2 receiver needs from a response.
func blockResponse(resp *Response) (block.Response, error) {
	br := block.Response{Payload: resp.Payload}
	if raw, ok := resp.Options.Get(message.Block2); ok {
		o, err := block.ParseBytes(raw)
		if err != nil {
			return br, err
		}
		br.Block, br.HasBlock = o, true
	}
	br.ETag, _ = resp.Options.ETag()
	if sz, err := resp.Options.Uint(message.Size2); err == nil {
		br.Size2 = sz
	}
	return br, nil
}
