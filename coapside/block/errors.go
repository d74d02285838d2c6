package block

import "errors"

// Sentinel errors; functions wrap them with details.
var (
	// ErrReservedSZX reports SZX 7, reserved in RFC 7959 §2.2 (BERT over
	// UDP is not defined).
	ErrReservedSZX = errors.New("block: reserved SZX 7")
	// ErrNumRange reports a block number or option value that does not fit
	// the 3-byte option (NUM at most 2^20-1, RFC 7959 §2.2).
	ErrNumRange = errors.New("block: block number out of range")
	// ErrBadSize reports a block size that is not a power of two in
	// 16..1024.
	ErrBadSize = errors.New("block: invalid block size")
	// ErrOptionLength reports an option value longer than 3 bytes.
	ErrOptionLength = errors.New("block: option value longer than 3 bytes")
	// ErrOutOfRange reports a Block2 request for a block that starts past the
	// end of the body; a server answers 4.02 Bad Option.
	ErrOutOfRange = errors.New("block: block starts beyond the end of the body")
	// ErrBlockSize reports a block whose payload does not match its SZX: a
	// block with M=1 must be exactly the block size, the last one at most.
	ErrBlockSize = errors.New("block: payload length does not match block size")
	// ErrUnexpectedBlock reports a response block that does not continue the
	// body received so far.
	ErrUnexpectedBlock = errors.New("block: unexpected block")
	// ErrTransfers reports a new transfer refused at MaxTransfers.
	ErrTransfers = errors.New("block: too many transfers in progress")
	// ErrTransfersPerSource reports a new transfer refused at
	// MaxTransfersPerSource.
	ErrTransfersPerSource = errors.New("block: too many transfers in progress from one source")
	// ErrTooLarge reports a body over the configured maximum.
	ErrTooLarge = errors.New("block: body too large")
	// ErrETagChanged reports that the representation changed more often
	// than the receiver is willing to restart.
	ErrETagChanged = errors.New("block: representation changed during transfer")
	// ErrDone reports use of a transfer that has already completed.
	ErrDone = errors.New("block: transfer already complete")
)
