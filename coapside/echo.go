package coapside

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// echoLen is the length of the Echo values the server issues: a 2-byte
// timestamp (unix seconds modulo 2^16) and a 6-byte truncated HMAC-SHA256
// over the timestamp and the source address. 8 bytes keep a challenge
// (4.01 + Echo, 14 bytes with an empty token) within three times the
// smallest request that names a resource, and leave room for an Echo on a
// small first block.
const echoLen = 8

// echoMaxLifetime is the longest lifetime a 16-bit timestamp can express
// without ambiguity.
const echoMaxLifetime = 1 << 15 * time.Second

// echoMinter issues and checks the server's Echo values (RFC 9175 §2.4).
// It keeps no state per source: a value is valid for the address it was
// given to, for its lifetime, and cannot be made without the key, which is
// random per process.
type echoMinter struct {
	key      [32]byte
	lifetime time.Duration
}

func newEchoMinter(lifetime time.Duration) *echoMinter {
	m := &echoMinter{lifetime: min(lifetime, echoMaxLifetime)}
	if _, err := rand.Read(m.key[:]); err != nil {
		// crypto/rand does not fail on supported platforms; a key that
		// could be guessed would let anyone pass the check.
		panic("coap echo: no randomness: " + err.Error())
	}
	return m
}

// mac computes the truncated HMAC of ts and the source.
func (m *echoMinter) mac(dst []byte, ts uint16, src peerKey) []byte {
	h := hmac.New(sha256.New, m.key[:])
	var b [2 + 16 + 2]byte
	binary.BigEndian.PutUint16(b[:2], ts)
	if src.str == "" {
		a := src.ap.Addr().As16()
		copy(b[2:18], a[:])
		binary.BigEndian.PutUint16(b[18:], src.ap.Port())
		h.Write(b[:])
	} else {
		h.Write(b[:2])
		h.Write([]byte(src.str))
	}
	return append(dst, h.Sum(nil)[:echoLen-2]...)
}

// mint returns a fresh Echo value for src.
func (m *echoMinter) mint(src peerKey, now time.Time) []byte {
	v := make([]byte, 2, echoLen)
	ts := uint16(now.Unix())
	binary.BigEndian.PutUint16(v, ts)
	return m.mac(v, ts, src)
}

// valid reports whether v is an Echo value this minter gave src no longer
// than its lifetime ago.
func (m *echoMinter) valid(v []byte, src peerKey, now time.Time) bool {
	if len(v) != echoLen {
		return false
	}
	ts := binary.BigEndian.Uint16(v)
	age := uint16(now.Unix()) - ts // modulo 2^16
	if time.Duration(age)*time.Second > m.lifetime {
		return false
	}
	var buf [echoLen - 2]byte
	return hmac.Equal(v[2:], m.mac(buf[:0], ts, src))
}

// echoChallenge returns the Echo value of a 4.01 Unauthorized response
// carrying one: the server asks the client to repeat its request with that
// value to prove its address or freshness (RFC 9175 §2.3).
func echoChallenge(code message.Code, opts message.Options) ([]byte, bool) {
	if code != message.Unauthorized {
		return nil, false
	}
	v, ok := opts.Echo()
	if !ok || len(v) == 0 {
		return nil, false
	}
	return v, true
}
