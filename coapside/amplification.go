package coapside

import (
	"container/list"
	"net"
	"sync"
	"time"

	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// Defaults of AmplificationOptions.
const (
	DefaultAmplificationFactor = 3
	DefaultVerifiedPeers       = 4096
	DefaultVerifiedLifetime    = 10 * time.Minute
	DefaultEchoLifetime        = 60 * time.Second
)

// AmplificationOptions bound what the server sends to a source whose
// address is not verified (RFC 7252 §11.3): no response datagram is larger
// than Factor times the request datagram it answers. A large answer to a
// GET goes out as a small first Block2 (RFC 7959 lets the server pick the
// block size); anything else too large, and every Observe registration, is
// answered 4.01 Unauthorized with an Echo option (RFC 9175 §2.4). A request
// that repeats a valid Echo value proves its source address, which is then
// remembered (IP and port) and answered without the bound. Error
// diagnostics are cut short rather than exceed it.
//
// The bound applies on every conn except those implementing
// VerifiedTransport (DTLS: the handshake's cookie exchange proved the
// address).
type AmplificationOptions struct {
	// Disable turns the bound off.
	Disable bool
	// Factor is the largest response/request size ratio (3).
	Factor int
	// VerifiedPeers bounds the verified addresses remembered per conn
	// (4096); beyond it the least recently seen is forgotten.
	VerifiedPeers int
	// VerifiedLifetime is how long a verified address is remembered after
	// its last request (10 min).
	VerifiedLifetime time.Duration
	// EchoLifetime is how long an Echo value is accepted after it was
	// issued (60 s).
	EchoLifetime time.Duration
}

// VerifiedTransport is implemented by a PacketConn whose peers proved
// their address before any of their datagrams reach the endpoint, as a
// DTLS handshake with a cookie exchange does. Responses on it are not
// bounded by AmplificationOptions.
type VerifiedTransport interface {
	PeersVerified() bool
}

// amplifier enforces AmplificationOptions on one endpoint.
type amplifier struct {
	factor   int
	echo     *echoMinter
	verified *verifiedTable
}

// newAmplifier returns nil when the bound does not apply to conn.
func newAmplifier(o AmplificationOptions, conn net.PacketConn, stats *Stats) *amplifier {
	if o.Disable {
		return nil
	}
	if v, ok := conn.(VerifiedTransport); ok && v.PeersVerified() {
		return nil
	}
	a := &amplifier{factor: o.Factor}
	if a.factor <= 0 {
		a.factor = DefaultAmplificationFactor
	}
	life := o.EchoLifetime
	if life <= 0 {
		life = DefaultEchoLifetime
	}
	a.echo = newEchoMinter(life)
	a.verified = newVerifiedTable(o.VerifiedPeers, o.VerifiedLifetime, stats)
	return a
}

// responseLimit returns the largest response datagram allowed for a
// request of n bytes from src received at now, or 0 when src is verified.
// A valid Echo option in the request verifies src.
func (e *Endpoint) responseLimit(m *message.Message, n int, src peerKey, now time.Time) int {
	a := e.amp()
	if a == nil {
		return 0
	}
	if a.verified.seen(src, now) {
		return 0
	}
	if v, ok := m.Options.Echo(); ok {
		if a.echo.valid(v, src, now) {
			e.stats.EchoVerified.Add(1)
			a.verified.add(src, now)
			return 0
		}
		e.stats.EchoRejected.Add(1)
	}
	return a.factor * n
}

func (e *Endpoint) amp() *amplifier {
	if e.srv == nil {
		return nil
	}
	return e.srv.amp
}

// VerifiedPeers returns how many verified source addresses the endpoint
// remembers (0 when the amplification bound does not apply to it).
func (e *Endpoint) VerifiedPeers() int {
	if a := e.amp(); a != nil {
		return a.verified.len()
	}
	return 0
}

// challenge answers r with 4.01 Unauthorized and a fresh Echo value for its
// source (RFC 9175 §2.4), so that the client proves its address by
// repeating the request with it.
func challenge(w ResponseWriter, r *Request) {
	w.SetCode(message.Unauthorized)
	a := r.ep.amp()
	if a == nil {
		return
	}
	*w.Options() = w.Options().SetEcho(a.echo.mint(r.src, time.Now()))
}

// unverified reports whether r came from a source whose responses are
// bounded, i.e. one that has not proved its address.
func (r *Request) unverified() bool { return r.limit > 0 }

// bound returns resp cut down to fit in limit bytes (0: no limit). A
// success response that is too large becomes a 4.01 Echo challenge; an
// error response loses its diagnostic payload, as much as needed, and then
// its options. The result is never larger than limit as long as limit
// covers the header and token, which the request itself carried. It counts
// what it changed. resp is taken and returned by value so that the
// caller's message stays on its stack.
func (e *Endpoint) bound(resp message.Message, limit int, src peerKey) message.Message {
	if limit <= 0 || resp.Size() <= limit {
		return resp
	}
	e.stats.AmplificationLimited.Add(1)
	if !resp.Code.IsError() {
		resp.Code = message.Unauthorized
		resp.Options = message.Options(nil).SetEcho(e.amp().echo.mint(src, time.Now()))
		resp.Payload = nil
	}
	trimToFit(&resp, limit)
	return resp
}

// trimToFit shortens resp's payload, then drops its options, until it fits
// in limit bytes.
func trimToFit(resp *message.Message, limit int) {
	if resp.Size() <= limit {
		return
	}
	if len(resp.Payload) > 0 {
		p := resp.Payload
		resp.Payload = nil
		if room := limit - resp.Size() - 1; room > 0 {
			resp.Payload = truncateUTF8(p, room)
		}
	}
	if resp.Size() > limit {
		resp.Options = nil
		resp.Payload = nil
	}
}

// truncateUTF8 cuts p to at most n bytes without splitting a UTF-8
// sequence (diagnostic payloads are UTF-8, RFC 7252 §5.5.2).
func truncateUTF8(p []byte, n int) []byte {
	if len(p) <= n {
		return p
	}
	for n > 0 && p[n]&0xC0 == 0x80 {
		n--
	}
	return p[:n]
}

// blockFit is how a Block2 answer to an unverified source is cut down to
// its response limit.
type blockFit struct {
	szx       uint8
	echo      []byte // an Echo value to add, so the next request verifies the source
	dropSize2 bool   // leave out the unsolicited Size2 of block 0
}

// apply adds the Echo and drops Size2 as decided.
func (f blockFit) apply(opts *message.Options) {
	if f.echo != nil {
		*opts = opts.SetEcho(f.echo)
	}
	if f.dropSize2 {
		*opts = opts.Del(message.Size2)
	}
}

// fitBlock picks the Block2 answer to r that fits r's response limit: the
// largest block size, at most maxSZX, preferring answers that carry an Echo
// value (RFC 9175 §2.4: a client that repeats it in its next request
// proves its address and then gets full-size answers) and then those that
// keep Size2. It returns maxSZX unchanged when r is not bounded or the
// answer already fits, and false when no block fits.
func fitBlock(rw *responseWriter, r *Request, b2 block.Option, hasB2 bool, maxSZX uint8) (blockFit, bool) {
	none := blockFit{szx: maxSZX}
	if !r.unverified() {
		return none, true
	}
	m := message.Message{Code: rw.code, Token: r.Token}
	if m.Code == message.Empty {
		m.Code = defaultCode(r.Method)
	}
	askedSize := hasB2 && r.Options.Has(message.Size2)
	fits := func(f blockFit) (bool, error) {
		s, err := block.SliceBody(rw.payload, b2, hasB2, f.szx)
		if err != nil {
			return false, err
		}
		m.Options = rw.opts
		m.Payload = s.Payload
		if s.Blockwise {
			m.Options = rw.opts.Clone()
			setBlock2(&m.Options, s, rw.payload, askedSize)
			f.apply(&m.Options)
		} else if f.echo != nil || f.dropSize2 {
			return false, nil // the whole body, unchanged, is tried on its own
		}
		return m.Size() <= r.limit, nil
	}
	if ok, err := fits(none); ok || err != nil {
		return none, true // fits as it is, or answered with an error below
	}
	echo := r.ep.amp().echo.mint(r.src, time.Now())
	variants := []blockFit{{echo: echo}, {echo: echo, dropSize2: true}, {}, {dropSize2: true}}
	if askedSize {
		// Size2 was asked for (RFC 7959 §4): it stays.
		variants = []blockFit{{echo: echo}, {}}
	}
	for _, v := range variants {
		for szx := int(maxSZX); szx >= 0; szx-- {
			v.szx = uint8(szx)
			if ok, _ := fits(v); ok {
				return v, true
			}
		}
	}
	return none, false
}

// verifiedTable remembers source addresses that proved themselves, least
// recently seen first out, each for a lifetime after its last request.
type verifiedTable struct {
	mu    sync.Mutex
	m     map[peerKey]*list.Element
	lru   list.List // of *verifiedEntry, most recent at the front
	max   int
	life  time.Duration
	stats *Stats
}

type verifiedEntry struct {
	key     peerKey
	expires time.Time
}

func newVerifiedTable(max int, life time.Duration, stats *Stats) *verifiedTable {
	if max <= 0 {
		max = DefaultVerifiedPeers
	}
	if life <= 0 {
		life = DefaultVerifiedLifetime
	}
	return &verifiedTable{m: make(map[peerKey]*list.Element), max: max, life: life, stats: stats}
}

// seen reports whether key is verified and, if so, extends its lifetime.
func (t *verifiedTable) seen(key peerKey, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.m[key]
	if !ok {
		return false
	}
	ent := el.Value.(*verifiedEntry)
	if now.After(ent.expires) {
		t.lru.Remove(el)
		delete(t.m, key)
		return false
	}
	ent.expires = now.Add(t.life)
	t.lru.MoveToFront(el)
	return true
}

// add remembers key as verified, forgetting the least recently seen
// address when the table is full.
func (t *verifiedTable) add(key peerKey, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.m[key]; ok {
		el.Value.(*verifiedEntry).expires = now.Add(t.life)
		t.lru.MoveToFront(el)
		return
	}
	for len(t.m) >= t.max {
		back := t.lru.Back()
		ent := back.Value.(*verifiedEntry)
		t.lru.Remove(back)
		delete(t.m, ent.key)
		if now.Before(ent.expires) {
			t.stats.VerifiedEvictions.Add(1)
		}
	}
	t.m[key] = t.lru.PushFront(&verifiedEntry{key: key, expires: now.Add(t.life)})
}

// sweep forgets the addresses whose lifetime has passed; they are the
// least recently seen, at the back.
func (t *verifiedTable) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for back := t.lru.Back(); back != nil; back = t.lru.Back() {
		ent := back.Value.(*verifiedEntry)
		if !now.After(ent.expires) {
			return
		}
		t.lru.Remove(back)
		delete(t.m, ent.key)
	}
}

func (t *verifiedTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
