// Package linkformat implements the CoRE Link Format (RFC 6690): a parser
// and encoder for link-format documents, query filtering as used on
// /.well-known/core (RFC 6690 §4.1), and a Resource description from which a
// server generates its discovery document.
//
// Server: answer GET /.well-known/core with
//
//	body, err := linkformat.WellKnownCore(resources, req.Options.Strings(URIQuery))
//
// (err wrapping ErrBadQuery is 4.00) and Content-Format ContentFormat (40).
// Client: links, err := Parse(payload), then Select(links, filters) and
// ResourceFromLink for typed attributes.
//
// The package does no I/O. Parse accepts bytes from the network and returns
// an error, never panics, on malformed input.
package linkformat
