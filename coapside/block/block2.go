package block

import "fmt"

// Slice is the server's Block2 answer to one request (RFC 7959 §2.4).
type Slice struct {
	// Payload is the part of the body to send. It aliases the body.
	Payload []byte
	// Blockwise is false when the body fits in one message and the client
	// asked for no block: send Payload (the whole body) without Block2.
	Blockwise bool
	// Block is the Block2 option of the response when Blockwise is true.
	Block Option
	// Size2 is the total body size. Include it as Size2 in the response to
	// block 0, or whenever the request carried Size2 (RFC 7959 §4).
	Size2 uint32
}

// SliceBody picks the block of body that answers a request.
//
// req is the request's Block2 option (hasReq false when absent); maxSZX is
// the largest block size the server is willing to send on this path. The
// response uses the client's SZX when it is smaller (RFC 7959 §2.2: "A
// server MUST use the block size indicated or a smaller size"), and maps the
// requested offset onto the smaller size when the server's is smaller. The M
// bit of a Block2 request is ignored, as RFC 7959 §2.2 requires.
//
// A block starting beyond the end of the body returns ErrOutOfRange (answer
// 4.02 Bad Option); an invalid maxSZX returns its validation error.
func SliceBody(body []byte, req Option, hasReq bool, maxSZX uint8) (Slice, error) {
	if err := (Option{SZX: maxSZX}).Valid(); err != nil {
		return Slice{}, err
	}
	s := Slice{Size2: uint32(len(body))}
	szx := maxSZX
	if hasReq {
		if err := req.Valid(); err != nil {
			return Slice{}, err
		}
		szx = min(szx, req.SZX)
	}
	size := 1 << (szx + 4)
	if !hasReq && len(body) <= size {
		s.Payload = body
		return s, nil
	}
	offset := 0
	if hasReq {
		// The offset comes from the client's size; with a smaller server
		// size it is still a multiple of the new size.
		offset = req.Offset()
	}
	if offset > 0 && offset >= len(body) {
		return Slice{}, fmt.Errorf("%w: offset %d, body %d bytes", ErrOutOfRange, offset, len(body))
	}
	num := offset >> (szx + 4)
	if num > MaxNum {
		return Slice{}, fmt.Errorf("%w: block %d", ErrNumRange, num)
	}
	end := min(offset+size, len(body))
	s.Blockwise = true
	s.Payload = body[offset:end]
	s.Block = Option{Num: uint32(num), More: end < len(body), SZX: szx}
	return s, nil
}
