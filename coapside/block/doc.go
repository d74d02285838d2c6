// Package block implements the protocol logic of block-wise transfers in
// CoAP (RFC 7959): the Block1/Block2 option value codec, server-side Block2
// slicing and Block1 reassembly, and client-side Block1 splitting and Block2
// reassembly.
//
// The package does no I/O. Each step takes the option values and payload of
// one message and returns a small value (a Decision, a Slice, a Step) that
// the CoAP server or client turns into a wire message.
package block
