// Package block implements the protocol logic of block-wise transfers in
// CoAP (RFC 7959): the Block1/Block2 option value codec, server-side Block2
// slicing and Block1 reassembly, and client-side Block1 splitting and Block2
// reassembly.
//
// The package does no I/O. Each step takes the option values and payload of
// one message and returns a small value (a Decision, a Slice, a Step) that
// the CoAP server or client turns into a wire message.
//
// Server, request with Block1 (decode it with Parse or ParseBytes):
//
//	d := asm.Receive(block.Key{Peer: peer, Path: path, Tag: requestTag},
//		block.Request{Block: b1, Payload: req.Payload, Size1: size1})
//	if !d.Complete {
//		// respond d.Code, with Block1=d.Block1 if d.HasBlock1 and
//		// Size1=d.Size1 if non-zero
//	} else {
//		// run the handler on d.Body; add Block1=d.Block1 to its response
//	}
//
// Server, any response body: s, err := SliceBody(body, b2, hasB2, maxSZX);
// err wrapping ErrOutOfRange is 4.02; send s.Payload, plus Block2=s.Block
// when s.Blockwise and Size2=s.Size2 on block 0.
//
// Client: Sender walks a large request body through 2.31 responses;
// Receiver collects a Block2 response (also the first block of an Observe
// notification) and says which block to ask for next.
package block
