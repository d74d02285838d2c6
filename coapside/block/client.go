package block

import (
	"bytes"
	"fmt"
)

// Sender splits a large request body into Block1 blocks on the client side
// (RFC 7959 §2.3). Send Current, then call Continue with the Block1 option
// of each 2.31 response until Current reports More false; the response to
// that last block is the final response.
type Sender struct {
	body   []byte
	offset int
	szx    uint8
	done   bool
}

// NewSender prepares body for transfer in blocks of blockSize bytes
// (16..1024).
func NewSender(body []byte, blockSize int) (*Sender, error) {
	szx, err := SZXForSize(blockSize)
	if err != nil {
		return nil, err
	}
	if (len(body)-1)>>(szx+4) > MaxNum {
		return nil, fmt.Errorf("%w: %d bytes need more than %d blocks", ErrTooLarge, len(body), MaxNum+1)
	}
	return &Sender{body: body, szx: szx}, nil
}

// Size1 is the total body size, to send as Size1 with the first block
// (RFC 7959 §4).
func (s *Sender) Size1() uint32 { return uint32(len(s.body)) }

// Current returns the Block1 option and payload of the block to send now.
func (s *Sender) Current() (Option, []byte) {
	size := 1 << (s.szx + 4)
	end := min(s.offset+size, len(s.body))
	return Option{Num: uint32(s.offset >> (s.szx + 4)), More: end < len(s.body), SZX: s.szx},
		s.body[s.offset:end]
}

// Continue advances past the current block after a 2.31 Continue whose
// Block1 option is resp. A smaller SZX in resp is adopted for the remaining
// blocks (RFC 7959 §2.3); the block number is recomputed from the byte
// offset, so it may jump (block 0 of 1024 bytes is followed by block 4 of
// 256). Continue after the last block returns ErrDone.
func (s *Sender) Continue(resp Option) error {
	if s.done {
		return ErrDone
	}
	cur, payload := s.Current()
	if !cur.More {
		s.done = true
		return fmt.Errorf("%w: 2.31 Continue after the last block", ErrDone)
	}
	if err := resp.Valid(); err != nil {
		return err
	}
	s.offset += len(payload)
	if resp.SZX < s.szx {
		s.szx = resp.SZX
	}
	return nil
}

// Response is the part of a response the Block2 Receiver needs.
type Response struct {
	// Block is the response's Block2 option; HasBlock is false without one.
	Block    Option
	HasBlock bool
	// ETag is the response's ETag option, nil when absent.
	ETag []byte
	// Size2 is the announced total size, 0 when absent.
	Size2 uint32
	// Payload is the response payload; the receiver copies it.
	Payload []byte
}

// Step is what the client does after a response block.
type Step struct {
	// Done is true when Body holds the whole representation.
	Done bool
	// Body is the reassembled representation when Done.
	Body []byte
	// Next is the Block2 option of the next request when not Done: repeat
	// the original request (without Observe) with this option.
	Next Option
	// Restart is true when the representation changed (new ETag) and the
	// transfer starts again from Next, block 0.
	Restart bool
}

// ReceiverOptions configure a Receiver.
type ReceiverOptions struct {
	// MaxBodySize bounds the reassembled body. Default 1 MiB.
	MaxBodySize int
	// BlockSize is the largest block size to ask for (16..1024); the
	// server's size is used when smaller. Default 1024.
	BlockSize int
	// MaxRestarts bounds restarts on ETag change. Default 3.
	MaxRestarts int
}

// Receiver reassembles a Block2 response body on the client side
// (RFC 7959 §2.4). It is not safe for concurrent use; one exists per
// transfer. Feed each response to Add and send the request Step.Next asks
// for until Step.Done.
type Receiver struct {
	opts     ReceiverOptions
	szx      uint8
	buf      []byte
	etag     []byte
	started  bool
	done     bool
	restarts int
}

// NewReceiver returns a Receiver. It fails only on an invalid BlockSize.
func NewReceiver(opts ReceiverOptions) (*Receiver, error) {
	if opts.MaxBodySize <= 0 {
		opts.MaxBodySize = DefaultMaxBodySize
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = MaxSize
	}
	if opts.MaxRestarts <= 0 {
		opts.MaxRestarts = 3
	}
	szx, err := SZXForSize(opts.BlockSize)
	if err != nil {
		return nil, err
	}
	return &Receiver{opts: opts, szx: szx}, nil
}

// First returns the Block2 option for the first request when the client
// wants to propose its block size up front (RFC 7959 §2.4: NUM 0, M 0).
func (r *Receiver) First() Option { return Option{SZX: r.szx} }

// Add processes one response. A response without Block2 is a complete
// representation. Errors: ErrUnexpectedBlock for a block that does not
// continue the body, ErrBlockSize for a wrong payload length, ErrTooLarge
// over MaxBodySize (also when Size2 announces it), ErrETagChanged after
// MaxRestarts, ErrDone after completion. After an error the transfer is
// dead.
func (r *Receiver) Add(resp Response) (Step, error) {
	if r.done {
		return Step{}, ErrDone
	}
	if !resp.HasBlock {
		return r.finish(append(r.buf[:0], resp.Payload...)), nil
	}
	blk := resp.Block
	if err := blk.Valid(); err != nil {
		r.done = true
		return Step{}, err
	}
	if int64(resp.Size2) > int64(r.opts.MaxBodySize) {
		r.done = true
		return Step{}, fmt.Errorf("%w: Size2 %d, limit %d", ErrTooLarge, resp.Size2, r.opts.MaxBodySize)
	}
	restarted := false
	if r.started && !bytes.Equal(resp.ETag, r.etag) {
		// RFC 7959 §2.4: blocks of different representations must not be
		// combined; start over.
		r.restarts++
		if r.restarts > r.opts.MaxRestarts {
			r.done = true
			return Step{}, fmt.Errorf("%w: %d restarts", ErrETagChanged, r.restarts-1)
		}
		r.buf, r.started, restarted = r.buf[:0], false, true
		if blk.Offset() != 0 {
			return Step{Restart: true, Next: Option{SZX: min(r.szx, blk.SZX)}}, nil
		}
	}
	if blk.Offset() != len(r.buf) {
		r.done = true
		return Step{}, fmt.Errorf("%w: block %s at offset %d, have %d bytes",
			ErrUnexpectedBlock, blk, blk.Offset(), len(r.buf))
	}
	if (blk.More && len(resp.Payload) != blk.Size()) || len(resp.Payload) > blk.Size() {
		r.done = true
		return Step{}, fmt.Errorf("%w: %d bytes in block %s", ErrBlockSize, len(resp.Payload), blk)
	}
	if len(r.buf)+len(resp.Payload) > r.opts.MaxBodySize {
		r.done = true
		return Step{}, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, r.opts.MaxBodySize)
	}
	if !r.started {
		r.started = true
		r.etag = append(r.etag[:0], resp.ETag...)
		if resp.ETag == nil {
			r.etag = nil
		}
	}
	r.buf = append(r.buf, resp.Payload...)
	if !blk.More {
		return r.finish(r.buf), nil
	}
	// Continue with the server's size, or ours if smaller; the offset is a
	// multiple of either since all earlier blocks were full.
	szx := min(r.szx, blk.SZX)
	num := len(r.buf) >> (szx + 4)
	if num > MaxNum {
		r.done = true
		return Step{}, fmt.Errorf("%w: block %d", ErrNumRange, num)
	}
	return Step{Next: Option{Num: uint32(num), SZX: szx}, Restart: restarted}, nil
}

func (r *Receiver) finish(body []byte) Step {
	r.done = true
	r.buf = nil
	return Step{Done: true, Body: body}
}
