package dtls

import (
	"encoding/binary"

	"github.com/pion/dtls/v2/pkg/protocol"
)

// Handshake message types read by the cookie checks (RFC 6347 §4.2.1, §4.3.2).
const (
	hsTypeClientHello        = 1
	hsTypeHelloVerifyRequest = 3
)

// firstHandshake returns the handshake header fields and the fragment bytes
// of the first record of b when it is an epoch-0 handshake record. The
// fragment is cut to what the record and the header both cover.
//
// Handshake header (RFC 6347 §4.2.2), 12 bytes after the record header:
//
//	+------+--------+-------------+-----------------+-----------------+
//	| type | length | message_seq | fragment_offset | fragment_length |
//	|  1   |   3    |      2      |        3        |        3        |
//	+------+--------+-------------+-----------------+-----------------+
func firstHandshake(b []byte) (typ byte, offset uint32, frag []byte, ok bool) {
	if !looksLikeDTLS(b) || protocol.ContentType(b[0]) != protocol.ContentTypeHandshake ||
		binary.BigEndian.Uint16(b[3:5]) != 0 {
		return 0, 0, nil, false
	}
	recLen := int(binary.BigEndian.Uint16(b[11:13]))
	rec := b[recordHeaderLen:]
	if recLen > len(rec) || recLen < handshakeHeaderLen {
		return 0, 0, nil, false
	}
	rec = rec[:recLen]
	typ = rec[0]
	offset = uint32(rec[6])<<16 | uint32(rec[7])<<8 | uint32(rec[8])
	fragLen := int(uint32(rec[9])<<16 | uint32(rec[10])<<8 | uint32(rec[11]))
	frag = rec[handshakeHeaderLen:]
	if fragLen < len(frag) {
		frag = frag[:fragLen]
	}
	return typ, offset, frag, true
}

// helloCookie returns the cookie of the ClientHello in datagram b, also from
// a first fragment long enough to hold it. ok is false when b is not an
// epoch-0 ClientHello whose cookie field could be read.
//
// ClientHello body (RFC 6347 §4.2.1):
//
//	client_version(2) random(32) session_id(1+n) cookie(1+n) ...
func helloCookie(b []byte) (cookie []byte, ok bool) {
	typ, offset, body, ok := firstHandshake(b)
	if !ok || typ != hsTypeClientHello || offset != 0 {
		return nil, false
	}
	off := 2 + 32
	if len(body) < off+1 {
		return nil, false
	}
	off += 1 + int(body[off]) // session_id
	if len(body) < off+1 {
		return nil, false
	}
	n := int(body[off])
	if len(body) < off+1+n {
		return nil, false
	}
	return body[off+1 : off+1+n], true
}

// hasCookie reports whether the ClientHello in b (or its first fragment)
// carries a non-empty cookie.
func hasCookie(b []byte) bool {
	c, ok := helloCookie(b)
	return ok && len(c) > 0
}

// verifyRequestCookie returns the cookie of the HelloVerifyRequest in
// datagram b (a datagram this end is about to send).
//
// HelloVerifyRequest body (RFC 6347 §4.2.1):
//
//	server_version(2) cookie(1+n)
func verifyRequestCookie(b []byte) (cookie []byte, ok bool) {
	typ, offset, body, ok := firstHandshake(b)
	if !ok || typ != hsTypeHelloVerifyRequest || offset != 0 || len(body) < 3 {
		return nil, false
	}
	n := int(body[2])
	if n == 0 || len(body) < 3+n {
		return nil, false
	}
	return body[3 : 3+n], true
}
