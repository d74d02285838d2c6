// Package linkformat implements the CoRE Link Format (RFC 6690): a parser
// and encoder for link-format documents, query filtering as used on
// /.well-known/core (RFC 6690 §4.1), and a Resource description from which a
// server generates its discovery document.
//
// The package does no I/O. Parse accepts bytes from the network and returns
// an error, never panics, on malformed input.
package linkformat
