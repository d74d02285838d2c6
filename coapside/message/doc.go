// Package message is the pure CoAP message codec (RFC 7252 §3): header, token,
// options with delta/length encoding, payload marker, the option and
// Content-Format registries and response codes. It performs no I/O.
//
// Decoding references the input buffer: Token, option values and Payload of a
// decoded Message alias the bytes passed to Unmarshal, so the caller must not
// reuse that buffer while the message is in use (or must Clone the message).
package message
