package block

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// Defaults for AssemblerOptions.
const (
	DefaultMaxBodySize  = 1 << 20
	DefaultMaxTransfers = 256
	// DefaultMaxTransfersPerSource is one source's share of MaxTransfers.
	DefaultMaxTransfersPerSource = 16
	DefaultMaxBufferedBytes      = 16 << 20
	// DefaultLifetime is EXCHANGE_LIFETIME (RFC 7252 §4.8.2), the time after
	// which an idle transfer is considered abandoned.
	DefaultLifetime = 247 * time.Second
)

// Key identifies one Block1 transfer. RFC 7959 §2.5 matches the blocks of a
// request body by endpoint and request URI; Tag separates concurrent bodies
// to the same URI and holds the Request-Tag option (RFC 9175 §3) when the
// client sends one. Put the token in Tag only for clients known to keep one
// token per body: many clients use a fresh token per block.
type Key struct {
	Peer string
	Path string
	Tag  string
	// Source is the client's host (its IP address, without the port), the
	// unit MaxTransfersPerSource counts by; "" counts with Peer.
	Source string
}

// source is what MaxTransfersPerSource counts k by.
func (k Key) source() string {
	if k.Source != "" {
		return k.Source
	}
	return k.Peer
}

// AssemblerOptions configure an Assembler. Zero values take the defaults.
type AssemblerOptions struct {
	// MaxBodySize bounds a reassembled body; larger bodies get 4.13 with
	// Size1 set to this value. Default 1 MiB.
	MaxBodySize int
	// MaxTransfers bounds concurrent transfers; a new one beyond it gets
	// 5.03. Default 256.
	MaxTransfers int
	// MaxTransfersPerSource bounds the concurrent transfers of one source
	// (Key.Source), so that one host cannot hold every slot of
	// MaxTransfers; a new one beyond it gets 5.03. Default
	// DefaultMaxTransfersPerSource, at most MaxTransfers.
	MaxTransfersPerSource int
	// MaxBufferedBytes bounds the bytes held across all transfers; a block
	// that would exceed it gets 5.03. Default 16 MiB.
	MaxBufferedBytes int
	// BlockSize is the server's preferred block size (16..1024). A client
	// sending larger blocks is told to use this size (RFC 7959 §2.3).
	// Default 1024.
	BlockSize int
	// Lifetime is how long a transfer may stay idle before it is dropped.
	// Default DefaultLifetime.
	Lifetime time.Duration
	// Now is the clock; default time.Now. Tests inject a fake one.
	Now func() time.Time
}

// Request is the part of a request with a Block1 option that the assembler
// needs.
type Request struct {
	// Block is the request's Block1 option.
	Block Option
	// Payload is the block's payload. The assembler copies it.
	Payload []byte
	// Size1 is the request's Size1 option, the announced total size; 0 when
	// absent (RFC 7959 §4).
	Size1 uint32
}

// Decision is what the server answers to one block of a Block1 transfer.
type Decision struct {
	// Complete is true when Body holds the whole request body: pass it to
	// the handler and put Block1 in its final response.
	Complete bool
	// Body is the reassembled body when Complete; it is owned by the caller.
	Body []byte
	// Code is the response to send when not Complete: 2.31 Continue, or an
	// error (4.00, 4.08, 4.13, 5.03).
	Code message.Code
	// Block1 is the Block1 option to put in the response (Continue or the
	// final response). HasBlock1 is false for error responses.
	Block1    Option
	HasBlock1 bool
	// Size1 is set on 4.13 to the largest body the server accepts
	// (RFC 7959 §2.9.3).
	Size1 uint32
	// Err explains an error Code, for logs.
	Err error
}

// AssemblerStats counts assembler events.
type AssemblerStats struct {
	Started    uint64 // transfers begun (NUM 0, more blocks to come)
	Completed  uint64 // bodies delivered, including single-block ones
	Incomplete uint64 // 4.08 answers: missing or out-of-order blocks
	TooLarge   uint64 // 4.13 answers
	BadBlocks  uint64 // 4.00 answers: payload length not matching SZX
	Rejected   uint64 // 5.03 answers: too many transfers or bytes
	// RejectedPerSource counts the 5.03 answers (among Rejected) to a
	// source at MaxTransfersPerSource.
	RejectedPerSource uint64
	// RejectedTransfers counts the 5.03 answers (among Rejected) at
	// MaxTransfers.
	RejectedTransfers uint64
	Expired           uint64 // transfers dropped after Lifetime idle
	Active            int    // transfers in progress now
	Buffered          int    // bytes held now
}

type transfer struct {
	key        Key
	buf        []byte
	lastOffset int
	lastLen    int
	lastNum    uint32
	lastSZX    uint8
	last       time.Time
	prev, next *transfer // idle order, oldest first
}

// Assembler reassembles Block1 request bodies on the server side
// (RFC 7959 §2.3, §2.5). It is safe for concurrent use. Idle transfers are
// dropped after Lifetime; expiry runs on every call and from Sweep.
type Assembler struct {
	opts AssemblerOptions
	szx  uint8

	mu        sync.Mutex
	transfers map[Key]*transfer
	perSource map[string]int // transfers in progress per Key.source()
	oldest    *transfer
	newest    *transfer
	buffered  int
	stats     AssemblerStats
}

// NewAssembler returns an Assembler. It fails only on an invalid BlockSize.
func NewAssembler(opts AssemblerOptions) (*Assembler, error) {
	if opts.MaxBodySize <= 0 {
		opts.MaxBodySize = DefaultMaxBodySize
	}
	if opts.MaxTransfers <= 0 {
		opts.MaxTransfers = DefaultMaxTransfers
	}
	if opts.MaxTransfersPerSource <= 0 {
		opts.MaxTransfersPerSource = DefaultMaxTransfersPerSource
	}
	opts.MaxTransfersPerSource = min(opts.MaxTransfersPerSource, opts.MaxTransfers)
	if opts.MaxBufferedBytes <= 0 {
		opts.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = MaxSize
	}
	if opts.Lifetime <= 0 {
		opts.Lifetime = DefaultLifetime
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	szx, err := SZXForSize(opts.BlockSize)
	if err != nil {
		return nil, fmt.Errorf("block size: %w", err)
	}
	return &Assembler{opts: opts, szx: szx, transfers: make(map[Key]*transfer), perSource: make(map[string]int)}, nil
}

// Receive processes one block of a request body and returns the answer.
func (a *Assembler) Receive(key Key, req Request) Decision {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	a.sweepLocked(now)

	blk := req.Block
	if err := blk.Valid(); err != nil {
		a.stats.BadBlocks++
		return Decision{Code: message.BadOption, Err: err}
	}
	// RFC 7959 §2.3: the server may ask for smaller blocks; never larger.
	resp := Option{Num: blk.Num, More: blk.More, SZX: min(blk.SZX, a.szx)}
	size := blk.Size()
	if (blk.More && len(req.Payload) != size) || len(req.Payload) > size {
		a.dropLocked(key)
		a.stats.BadBlocks++
		return Decision{Code: message.BadRequest,
			Err: fmt.Errorf("%w: %d bytes in block %s", ErrBlockSize, len(req.Payload), blk)}
	}
	if int64(req.Size1) > int64(a.opts.MaxBodySize) {
		return a.tooLargeLocked(key, int(req.Size1))
	}
	if blk.Num == 0 && len(req.Payload) > a.opts.MaxBodySize {
		return a.tooLargeLocked(key, len(req.Payload))
	}
	offset := blk.Offset()

	t := a.transfers[key]
	if blk.Num == 0 {
		// A first block starts a transfer, replacing an older one.
		a.dropLocked(key)
		t = nil
		if !blk.More {
			a.stats.Completed++
			return Decision{Complete: true, Body: append([]byte(nil), req.Payload...),
				Block1: resp, HasBlock1: true}
		}
		if n := a.perSource[key.source()]; n >= a.opts.MaxTransfersPerSource {
			// Checked first: a source at its own limit is told so even
			// when the total is reached too.
			a.stats.Rejected++
			a.stats.RejectedPerSource++
			return Decision{Code: message.ServiceUnavailable,
				Err: fmt.Errorf("%w: %d transfers in progress from %s", ErrTransfersPerSource, n, key.source())}
		}
		if len(a.transfers) >= a.opts.MaxTransfers {
			a.stats.Rejected++
			a.stats.RejectedTransfers++
			return Decision{Code: message.ServiceUnavailable,
				Err: fmt.Errorf("%w: %d transfers in progress", ErrTransfers, len(a.transfers))}
		}
		t = &transfer{key: key}
		a.transfers[key] = t
		a.perSource[key.source()]++
		a.stats.Started++
	} else {
		if t == nil {
			a.stats.Incomplete++
			return Decision{Code: message.RequestEntityIncomplete,
				Err: fmt.Errorf("%w: block %s without a transfer in progress", ErrUnexpectedBlock, blk)}
		}
		if offset == t.lastOffset && blk.Num == t.lastNum && blk.SZX == t.lastSZX &&
			len(req.Payload) == t.lastLen && bytes.Equal(req.Payload, t.buf[t.lastOffset:]) {
			// A repeated block (its response was lost): answer again
			// without appending. With More cleared it ends the body
			// there; other bytes at this offset fall through to the
			// out-of-order check below.
			a.touchLocked(t, now)
			return a.answerLocked(t, resp)
		}
		if offset != len(t.buf) {
			// RFC 7959 §2.9.2: blocks missing or out of order.
			a.dropLocked(key)
			a.stats.Incomplete++
			return Decision{Code: message.RequestEntityIncomplete,
				Err: fmt.Errorf("%w: block %s at offset %d, expected offset %d",
					ErrUnexpectedBlock, blk, offset, len(t.buf))}
		}
	}
	if len(t.buf)+len(req.Payload) > a.opts.MaxBodySize {
		return a.tooLargeLocked(key, len(t.buf)+len(req.Payload))
	}
	if a.buffered+len(req.Payload) > a.opts.MaxBufferedBytes {
		a.dropLocked(key)
		a.stats.Rejected++
		return Decision{Code: message.ServiceUnavailable,
			Err: fmt.Errorf("block: %d bytes buffered across transfers", a.buffered)}
	}
	t.buf = append(t.buf, req.Payload...)
	a.buffered += len(req.Payload)
	t.lastOffset, t.lastLen, t.lastNum, t.lastSZX = offset, len(req.Payload), blk.Num, blk.SZX
	a.touchLocked(t, now)
	return a.answerLocked(t, resp)
}

// answerLocked returns Continue, or the complete body after the last block.
func (a *Assembler) answerLocked(t *transfer, resp Option) Decision {
	if resp.More {
		return Decision{Code: message.Continue, Block1: resp, HasBlock1: true}
	}
	body := t.buf
	a.dropLocked(t.key)
	a.stats.Completed++
	return Decision{Complete: true, Body: body, Block1: resp, HasBlock1: true}
}

func (a *Assembler) tooLargeLocked(key Key, size int) Decision {
	a.dropLocked(key)
	a.stats.TooLarge++
	return Decision{Code: message.RequestEntityTooLarge, Size1: uint32(a.opts.MaxBodySize),
		Err: fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, a.opts.MaxBodySize)}
}

// Sweep drops transfers idle for longer than Lifetime and returns how many
// it dropped. Receive sweeps too; call Sweep periodically to free memory
// when no blocks arrive.
func (a *Assembler) Sweep() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sweepLocked(a.opts.Now())
}

func (a *Assembler) sweepLocked(now time.Time) int {
	n := 0
	for a.oldest != nil && now.Sub(a.oldest.last) > a.opts.Lifetime {
		a.dropLocked(a.oldest.key)
		a.stats.Expired++
		n++
	}
	return n
}

// Stats returns a snapshot of the counters.
func (a *Assembler) Stats() AssemblerStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.Active = len(a.transfers)
	s.Buffered = a.buffered
	return s
}

// touchLocked marks t active at now, moving it to the newest end.
func (a *Assembler) touchLocked(t *transfer, now time.Time) {
	t.last = now
	if a.newest == t {
		return
	}
	a.unlinkLocked(t)
	t.prev = a.newest
	if a.newest != nil {
		a.newest.next = t
	}
	a.newest = t
	if a.oldest == nil {
		a.oldest = t
	}
}

func (a *Assembler) unlinkLocked(t *transfer) {
	if t.prev != nil {
		t.prev.next = t.next
	} else if a.oldest == t {
		a.oldest = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else if a.newest == t {
		a.newest = t.prev
	}
	t.prev, t.next = nil, nil
}

func (a *Assembler) dropLocked(key Key) {
	t, ok := a.transfers[key]
	if !ok {
		return
	}
	a.unlinkLocked(t)
	a.buffered -= len(t.buf)
	delete(a.transfers, key)
	src := key.source()
	if a.perSource[src] <= 1 {
		delete(a.perSource, src)
	} else {
		a.perSource[src]--
	}
}
