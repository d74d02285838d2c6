package dtls

import (
	"encoding/binary"
	"fmt"

	"github.com/pion/dtls/v2/pkg/protocol"
	"github.com/pion/dtls/v2/pkg/protocol/handshake"
	"github.com/pion/dtls/v2/pkg/protocol/recordlayer"
)

// Record layer constants.
//
// RFC 6347 §4.1 DTLSPlaintext header, 13 bytes:
//
//	+------+---------+-------+-----------------+--------+
//	| type | version | epoch | sequence_number | length |
//	|  1   |    2    |   2   |        6        |   2    |
//	+------+---------+-------+-----------------+--------+
const (
	recordHeaderLen    = 13
	handshakeHeaderLen = 12 // RFC 6347 §4.2.2
)

// helloInfo describes the first datagram from an unknown peer that passed
// inspection.
type helloInfo struct {
	// cookie reports whether the ClientHello carries a HelloVerifyRequest
	// cookie (the second ClientHello of RFC 6347 §4.2.1).
	cookie bool
	// fragment reports that the ClientHello is fragmented, so only its
	// headers could be checked.
	fragment bool
	// suites are the cipher suites the client offers (nil for a fragment).
	suites []uint16
}

// isAlert reports whether b starts with a DTLS alert record (RFC 6347
// §4.1: the content type is sent in the clear, also once encrypted).
func isAlert(b []byte) bool {
	return looksLikeDTLS(b) && protocol.ContentType(b[0]) == protocol.ContentTypeAlert
}

// looksLikeDTLS reports whether b starts with a plausible DTLS record header:
// a known content type and a DTLS version (1.0 = 0xfeff, 1.2 = 0xfefd;
// RFC 6347 §4.1). CoAP messages start with 0b01xxxxxx (RFC 7252 §3), which is
// never a DTLS content type, so plaintext CoAP is told apart by the first byte.
func looksLikeDTLS(b []byte) bool {
	if len(b) < recordHeaderLen {
		return false
	}
	switch protocol.ContentType(b[0]) {
	case protocol.ContentTypeChangeCipherSpec, protocol.ContentTypeAlert,
		protocol.ContentTypeHandshake, protocol.ContentTypeApplicationData:
	default:
		return false
	}
	return b[1] == 0xfe && (b[2] == 0xff || b[2] == 0xfd)
}

// recordEpoch returns the epoch of the first record in b, or -1 when b is not
// a DTLS record.
func recordEpoch(b []byte) int {
	if !looksLikeDTLS(b) {
		return -1
	}
	return int(binary.BigEndian.Uint16(b[3:5]))
}

// maxEpoch returns the highest epoch among the records of datagram b, or -1
// when b does not start with a DTLS record. A flight often packs an epoch-0
// ChangeCipherSpec and an epoch-1 Finished into one datagram (RFC 6347 §4.1).
func maxEpoch(b []byte) int {
	best := -1
	for looksLikeDTLS(b) {
		best = max(best, int(binary.BigEndian.Uint16(b[3:5])))
		n := recordHeaderLen + int(binary.BigEndian.Uint16(b[11:13]))
		if n > len(b) {
			break
		}
		b = b[n:]
	}
	return best
}

// inspectHello checks the first datagram from an unknown peer before any
// session state is allocated. It returns ErrNotDTLS for bytes that are not a
// DTLS handshake record at epoch 0 (plaintext CoAP, stray application data),
// and ErrMalformedHello for a ClientHello that does not parse or whose
// extensions are inconsistent. Only a well-formed ClientHello may start a
// handshake.
func inspectHello(b []byte) (info helloInfo, err error) {
	defer func() {
		// The record parsers below are third-party code fed with hostile
		// bytes; a panic there must cost one datagram, not the listener.
		if r := recover(); r != nil {
			info, err = helloInfo{}, fmt.Errorf("%w: parser panic: %v", ErrMalformedHello, r)
		}
	}()
	if !looksLikeDTLS(b) {
		return helloInfo{}, ErrNotDTLS
	}
	recs, err := recordlayer.UnpackDatagram(b)
	if err != nil || len(recs) == 0 {
		return helloInfo{}, fmt.Errorf("%w: record: %v", ErrMalformedHello, err)
	}
	var h recordlayer.Header
	if err := h.Unmarshal(recs[0]); err != nil {
		return helloInfo{}, fmt.Errorf("%w: record header: %w", ErrMalformedHello, err)
	}
	if h.ContentType != protocol.ContentTypeHandshake || h.Epoch != 0 {
		return helloInfo{}, fmt.Errorf("%w: content type %d epoch %d", ErrNotDTLS, h.ContentType, h.Epoch)
	}
	body := recs[0][recordHeaderLen:]
	var hh handshake.Header
	if err := hh.Unmarshal(body); err != nil {
		return helloInfo{}, fmt.Errorf("%w: handshake header: %w", ErrMalformedHello, err)
	}
	if hh.Type != handshake.TypeClientHello {
		// A later flight of a handshake this end no longer has (it timed
		// out or was refused): a stray record, not a malformed hello.
		return helloInfo{}, fmt.Errorf("%w: handshake type %d from peer without session", ErrNotDTLS, hh.Type)
	}
	msg := body[handshakeHeaderLen:]
	if uint32(len(msg)) < hh.FragmentLength {
		return helloInfo{}, fmt.Errorf("%w: fragment longer than record", ErrMalformedHello)
	}
	msg = msg[:hh.FragmentLength]
	if hh.FragmentOffset != 0 || hh.FragmentLength != hh.Length {
		// RFC 6347 §4.2.3: a large ClientHello may be fragmented; the
		// handshake layer reassembles it. Only the headers are checked here.
		if hh.FragmentOffset+hh.FragmentLength > hh.Length {
			return helloInfo{}, fmt.Errorf("%w: fragment beyond message", ErrMalformedHello)
		}
		return helloInfo{fragment: true}, nil
	}
	var ch handshake.MessageClientHello
	if err := ch.Unmarshal(msg); err != nil {
		return helloInfo{}, fmt.Errorf("%w: %w", ErrMalformedHello, err)
	}
	if err := checkExtensions(msg); err != nil {
		return helloInfo{}, err
	}
	return helloInfo{cookie: len(ch.Cookie) > 0, suites: ch.CipherSuiteIDs}, nil
}

// checkExtensions walks the extensions block of a ClientHello body strictly:
// every extension must fit inside the declared block and no type may repeat
// (RFC 5246 §7.4.1.4). The pion parser skips unknown extensions without
// bounds-checking their lengths, so this walk is what refuses garbage there.
//
// ClientHello body (RFC 6347 §4.2.1):
//
//	client_version(2) random(32) session_id(1+n) cookie(1+n)
//	cipher_suites(2+n) compression_methods(1+n) [extensions(2+n)]
func checkExtensions(msg []byte) error {
	off := 2 + 32
	for _, lenBytes := range []int{1, 1, 2, 1} {
		if len(msg) < off+lenBytes {
			return fmt.Errorf("%w: truncated", ErrMalformedHello)
		}
		n := int(msg[off])
		if lenBytes == 2 {
			n = int(binary.BigEndian.Uint16(msg[off:]))
		}
		off += lenBytes + n
	}
	if off > len(msg) {
		return fmt.Errorf("%w: truncated", ErrMalformedHello)
	}
	if off == len(msg) {
		return nil // no extensions block
	}
	if len(msg) < off+2 {
		return fmt.Errorf("%w: truncated extensions length", ErrMalformedHello)
	}
	total := int(binary.BigEndian.Uint16(msg[off:]))
	ext := msg[off+2:]
	if total != len(ext) {
		return fmt.Errorf("%w: extensions length %d, have %d bytes", ErrMalformedHello, total, len(ext))
	}
	seen := make(map[uint16]struct{}, 8)
	for len(ext) > 0 {
		if len(ext) < 4 {
			return fmt.Errorf("%w: truncated extension header", ErrMalformedHello)
		}
		typ := binary.BigEndian.Uint16(ext)
		n := int(binary.BigEndian.Uint16(ext[2:]))
		if len(ext) < 4+n {
			return fmt.Errorf("%w: extension %d length %d exceeds block", ErrMalformedHello, typ, n)
		}
		if _, dup := seen[typ]; dup {
			return fmt.Errorf("%w: duplicate extension %d", ErrMalformedHello, typ)
		}
		seen[typ] = struct{}{}
		ext = ext[4+n:]
	}
	return nil
}
