package coapside

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// BlockwiseOptions configures the server's block-wise layer (RFC 7959).
// Zero values take the defaults.
type BlockwiseOptions struct {
	// Disable turns the layer off: handlers see Block1/Block2 options and
	// must deal with them themselves.
	Disable bool
	// BlockSize is the largest block the server sends or accepts (16..1024,
	// a power of two). Default: the largest size that fits MaxMessageSize
	// with room for header and options, at most 1024.
	BlockSize int
	// MaxBodySize bounds a reassembled Block1 request body; larger bodies
	// get 4.13 Request Entity Too Large with Size1 (RFC 7959 §2.9.3).
	// Default 1 MiB.
	MaxBodySize int
	// MaxTransfers bounds concurrent Block1 transfers (256).
	MaxTransfers int
	// MaxTransfersPerSource bounds the concurrent Block1 transfers of one
	// source address, so one host cannot hold every slot of MaxTransfers
	// (block.DefaultMaxTransfersPerSource).
	MaxTransfersPerSource int
	// Lifetime is how long an idle Block1 transfer is kept before it is
	// reclaimed as abandoned (EXCHANGE_LIFETIME).
	Lifetime time.Duration
	// Logger receives the bounded log of refused transfers; nil takes the
	// server's.
	Logger *slog.Logger
}

// blockOverhead is the room kept for header, token and options when deriving
// the block size from the maximum message size.
const blockOverhead = 128

// blockSizeFor returns the largest block size (power of two, 16..1024) that
// fits a datagram of maxMessage bytes.
func blockSizeFor(maxMessage int) int {
	size := block.MaxSize
	for size > block.MinSize && size+blockOverhead > maxMessage {
		size >>= 1
	}
	return size
}

// Blockwise is server middleware that implements RFC 7959 for every handler
// behind it: it reassembles Block1 request bodies before the handler runs
// (answering 2.31 Continue, 4.08, 4.13) and slices response bodies larger than
// the negotiated block size into Block2 blocks, adding an ETag so clients can
// tell when the representation changed between blocks (RFC 7959 §2.4).
type Blockwise struct {
	next Handler
	asm  *block.Assembler
	szx  uint8
	size int

	sweepEvery time.Duration
	lastSweep  atomic.Int64 // unix nanoseconds

	log    *slog.Logger
	limits limitCounter
}

// NewBlockwise wraps next. maxMessageSize is the endpoint's MaxMessageSize
// (0 for the default), used when opts.BlockSize is zero.
func NewBlockwise(next Handler, opts BlockwiseOptions, maxMessageSize int) (*Blockwise, error) {
	if maxMessageSize <= 0 {
		maxMessageSize = DefaultMaxMessageSize
	}
	size := opts.BlockSize
	if size == 0 {
		size = blockSizeFor(maxMessageSize)
	}
	szx, err := block.SZXForSize(size)
	if err != nil {
		return nil, fmt.Errorf("coap blockwise: %w", err)
	}
	asm, err := block.NewAssembler(block.AssemblerOptions{
		MaxBodySize:           opts.MaxBodySize,
		MaxTransfers:          opts.MaxTransfers,
		MaxTransfersPerSource: opts.MaxTransfersPerSource,
		BlockSize:             size,
		Lifetime:              opts.Lifetime,
	})
	if err != nil {
		return nil, fmt.Errorf("coap blockwise: %w", err)
	}
	lifetime := opts.Lifetime
	if lifetime <= 0 {
		lifetime = block.DefaultLifetime
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Blockwise{next: next, asm: asm, szx: szx, size: size, sweepEvery: lifetime / 4, log: log}
	b.lastSweep.Store(time.Now().UnixNano())
	return b, nil
}

// maybeSweep drops abandoned Block1 transfers now and then, piggybacked on
// any request, so their buffers are freed even when no block follows.
func (b *Blockwise) maybeSweep() {
	now := time.Now().UnixNano()
	last := b.lastSweep.Load()
	if time.Duration(now-last) < b.sweepEvery || !b.lastSweep.CompareAndSwap(last, now) {
		return
	}
	b.asm.Sweep()
}

// BlockSize returns the server's block size in bytes.
func (b *Blockwise) BlockSize() int { return b.size }

// Stats returns the Block1 assembler counters.
func (b *Blockwise) Stats() block.AssemblerStats { return b.asm.Stats() }

// LimitHits returns how often each Block1 limit refused a block.
func (b *Blockwise) LimitHits() LimitHits { return b.limits.snapshot() }

// noteLimit counts and logs a block refused by a limit.
func (b *Blockwise) noteLimit(d *block.Decision, r *Request) {
	var l Limit
	switch {
	case errors.Is(d.Err, block.ErrTransfersPerSource):
		l = LimitBlock1TransfersPerSource
	case errors.Is(d.Err, block.ErrTransfers):
		l = LimitBlock1Transfers
	case errors.Is(d.Err, block.ErrTooLarge):
		l = LimitBlock1Size
	default:
		return
	}
	b.limits.hit(b.log, l, r.Peer, "path", r.Path(), "err", d.Err)
}

// Sweep drops Block1 transfers idle past their lifetime and returns how many.
// Every block sweeps, and so does any request once a quarter lifetime has
// passed; call Sweep to free memory when all traffic stops.
func (b *Blockwise) Sweep() int { return b.asm.Sweep() }

// ServeCOAP runs the block-wise protocol around the next handler.
func (b *Blockwise) ServeCOAP(w ResponseWriter, r *Request) {
	b.maybeSweep()
	var block1 *block.Decision
	if v, ok := r.Options.Get(message.Block1); ok {
		opt, err := block.ParseBytes(v)
		if err != nil {
			// RFC 7959 §2.2: a malformed block option is a bad option.
			Error(w, fmt.Errorf("%w: Block1: %w", message.BadOption, err))
			return
		}
		size1, _ := r.Options.Uint(message.Size1)
		d := b.asm.Receive(transferKey(r), block.Request{Block: opt, Payload: r.Payload, Size1: size1})
		if !d.Complete {
			if d.Code.IsError() {
				b.noteLimit(&d, r)
			}
			writeDecision(w, &d)
			return
		}
		block1 = &d
		r2 := *r
		r2.Payload = d.Body
		r2.Options = r.Options.Clone().Del(message.Block1).Del(message.Size1)
		r = &r2
	}
	b2, hasB2, err := requestBlock2(r)
	if err != nil {
		Error(w, err)
		return
	}
	if rw, ok := w.(*responseWriter); ok {
		// Fast path: the server's own writer can be inspected afterwards.
		b.next.ServeCOAP(rw, r)
		b.finish(rw, r, block1, b2, hasB2)
		return
	}
	var bw responseWriter
	b.next.ServeCOAP(&bw, r)
	b.finish(&bw, r, block1, b2, hasB2)
	w.SetCode(bw.code)
	*w.Options() = bw.opts
	if len(bw.payload) > 0 {
		_, _ = w.Write(bw.payload)
	}
}

// requestBlock2 decodes the Block2 option of a request.
func requestBlock2(r *Request) (block.Option, bool, error) {
	v, ok := r.Options.Get(message.Block2)
	if !ok {
		return block.Option{}, false, nil
	}
	opt, err := block.ParseBytes(v)
	if err != nil {
		return block.Option{}, false, fmt.Errorf("%w: Block2: %w", message.BadOption, err)
	}
	return opt, true, nil
}

// finish adds the Block1 acknowledgement and slices the body of the response
// in rw (RFC 7959 §2.3, §2.4).
func (b *Blockwise) finish(rw *responseWriter, r *Request, block1 *block.Decision, b2 block.Option, hasB2 bool) {
	if block1 != nil && block1.HasBlock1 {
		if v, err := block1.Block1.Value(); err == nil {
			rw.opts = rw.opts.SetUint(message.Block1, v)
		}
	}
	if rw.opts.Has(message.Block2) {
		return // the handler does its own block-wise transfer
	}
	fit := blockFit{szx: b.szx}
	if (r.Method == message.GET || r.Method == message.FETCH) && !rw.code.IsError() {
		// A source that has not proved its address gets blocks small
		// enough for the amplification bound (RFC 7252 §11.3).
		fit, _ = fitBlock(rw, r, b2, hasB2, b.szx)
	}
	if !hasB2 && len(rw.payload) <= 1<<(fit.szx+4) {
		return
	}
	body := rw.payload
	s, err := block.SliceBody(body, b2, hasB2, fit.szx)
	if err != nil {
		code := message.InternalServerError
		if errors.Is(err, block.ErrOutOfRange) || errors.Is(err, block.ErrNumRange) {
			// RFC 7959 §2.2: a block beyond the end is a bad option.
			code = message.BadOption
		}
		rw.code = code
		rw.opts = nil
		rw.payload = append(rw.payload[:0], err.Error()...)
		return
	}
	if !s.Blockwise {
		return
	}
	setBlock2(&rw.opts, s, body, hasB2 && r.Options.Has(message.Size2))
	fit.apply(&rw.opts)
	rw.payload = s.Payload
}

// setBlock2 adds Block2, Size2 (on block 0 or when asked) and an ETag over the
// whole body unless the handler set one (RFC 7959 §2.4, §4).
func setBlock2(opts *message.Options, s block.Slice, body []byte, askedSize bool) {
	if v, err := s.Block.Value(); err == nil {
		*opts = opts.SetUint(message.Block2, v)
	}
	if s.Block.Num == 0 || askedSize {
		*opts = opts.SetUint(message.Size2, s.Size2)
	}
	if !opts.Has(message.ETag) {
		*opts = opts.Set(message.ETag, bodyETag(body))
	}
}

// bodyETag derives an 8-byte entity tag from the body, so every block of the
// same representation carries the same ETag.
func bodyETag(body []byte) []byte {
	h := fnv.New64a()
	_, _ = h.Write(body)
	return h.Sum(make([]byte, 0, 8))
}

// transferKey identifies a Block1 transfer by peer, method and request URI,
// with the Request-Tag option separating concurrent bodies (RFC 7959 §2.5,
// RFC 9175 §3).
func transferKey(r *Request) block.Key {
	var sb strings.Builder
	sb.WriteString(r.Method.String())
	sb.WriteByte(' ')
	sb.WriteString(r.Path())
	for i, q := range r.Queries() {
		if i == 0 {
			sb.WriteByte('?')
		} else {
			sb.WriteByte('&')
		}
		sb.WriteString(q)
	}
	tag, _ := r.Options.Get(message.RequestTag)
	peer, source := "", ""
	if r.Peer != nil {
		peer = r.Peer.String()
		source = sourceOf(r.Peer).String()
	}
	return block.Key{Peer: peer, Path: sb.String(), Tag: string(tag), Source: source}
}

// writeDecision answers one Block1 block that did not complete the body.
func writeDecision(w ResponseWriter, d *block.Decision) {
	w.SetCode(d.Code)
	if d.HasBlock1 {
		if v, err := d.Block1.Value(); err == nil {
			*w.Options() = w.Options().SetUint(message.Block1, v)
		}
	}
	if d.Size1 != 0 {
		// RFC 7959 §2.9.3: 4.13 tells the client the largest body accepted.
		*w.Options() = w.Options().SetUint(message.Size1, d.Size1)
	}
	if d.Err != nil && d.Code.IsError() {
		_, _ = w.Write([]byte(d.Err.Error()))
	}
}

// wrapBlockwise puts the server's block-wise layer (one per server, shared by
// its conns) in front of h unless it is disabled.
func (s *Server) wrapBlockwise(h Handler) (Handler, error) {
	o := s.Options
	if o.Blockwise.Disable {
		return h, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bw == nil {
		bo := o.Blockwise
		if bo.Logger == nil {
			bo.Logger = o.Logger
		}
		bw, err := NewBlockwise(h, bo, o.MaxMessageSize)
		if err != nil {
			return nil, err
		}
		s.bw = bw
	}
	return s.bw, nil
}

// Blockwise returns the server's block-wise layer (nil before Serve or when
// disabled), for its Stats.
func (s *Server) Blockwise() *Blockwise {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bw
}
