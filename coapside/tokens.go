package coapside

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// ResponseFunc receives responses matched by token. resp is nil when err is
// set (ErrReset, ErrTimeout, ErrClosed). Returning false ends the
// registration. It runs on a read goroutine and must not block.
type ResponseFunc func(resp *message.Message, from net.Addr, err error) bool

// tokenKey routes responses by (peer, token) (RFC 7252 §5.3.2).
type tokenKey struct {
	peer peerKey
	tok  [message.MaxTokenLength]byte
	n    uint8
}

func makeTokenKey(peer peerKey, tok []byte) tokenKey {
	k := tokenKey{peer: peer, n: uint8(len(tok))}
	copy(k.tok[:], tok)
	return k
}

type tokenReg struct {
	fn        ResponseFunc
	og        *outgoing // the request's transmission, stopped by the first response
	delivered bool      // a response has been delivered
	// request: registered by Exchange for a request of its own, which an
	// unreachable destination fails; a registration for notifications
	// alone (RegisterToken) waits on.
	request bool
}

// randUint64 returns a random 64-bit value from the runtime's cryptographically
// seeded generator.
func randUint64() uint64 { return rand.Uint64() }

// NewToken returns a random 8-byte token (RFC 7252 §5.3.1; RFC 9175 §4
// recommends unpredictable tokens).
func NewToken() []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, randUint64())
	return b
}

// RegisterToken routes every CON/NON response from peer carrying token to fn
// until fn returns false or cancel is called; CON responses are acknowledged.
// Responses with a token nobody registered are rejected with RST. This is the
// hook for Observe notifications (RFC 7641 §3.3).
func (e *Endpoint) RegisterToken(peer net.Addr, token []byte, fn ResponseFunc) (cancel func(), err error) {
	pk := resolvePeer(peer)
	return e.registerToken(pk, token, fn, nil)
}

func (e *Endpoint) registerToken(pk peerAddr, token []byte, fn ResponseFunc, og *outgoing) (func(), error) {
	if len(token) > message.MaxTokenLength {
		return nil, message.ErrTokenLength
	}
	key := makeTokenKey(pk.key, token)
	reg := &tokenReg{fn: fn, og: og}
	e.mu.Lock()
	if e.tokens == nil {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := e.tokens[key]; ok {
		e.mu.Unlock()
		return nil, ErrTokenInUse
	}
	e.tokens[key] = reg
	e.mu.Unlock()
	return func() { e.unregister(key, reg) }, nil
}

// unregister removes reg if it is still registered and reports whether it was.
func (e *Endpoint) unregister(key tokenKey, reg *tokenReg) bool {
	e.mu.Lock()
	cur, ok := e.tokens[key]
	if ok && cur == reg {
		delete(e.tokens, key)
	}
	og := reg.og
	e.mu.Unlock()
	if ok && cur == reg {
		og.abandon()
		return true
	}
	return false
}

// handleResponse processes a CON or NON response (separate response or
// notification): deduplicate, ACK a CON, route by token, RST when unknown
// (RFC 7252 §4.2, §4.3, §5.3.2).
func (e *Endpoint) handleResponse(r *reader, m *message.Message, data []byte, from peerAddr) {
	con := m.Type == message.Confirmable
	lifetime := e.p.NonLifetime
	if con {
		lifetime = e.p.ExchangeLifetime
	}
	ref, res, cached := e.dedup.begin(dedupKey{peer: from.key, mid: m.MessageID}, time.Now(), lifetime, r.scratch)
	switch res {
	case dedupDupBusy:
		e.stats.Duplicates.Add(1)
		return
	case dedupDupReplay:
		e.stats.Duplicates.Add(1)
		e.stats.DuplicateReplays.Add(1)
		r.scratch = cached[:0]
		e.writeR(r, cached, &from)
		return
	}
	key := makeTokenKey(from.key, m.Token)
	e.mu.Lock()
	_, known := e.tokens[key]
	e.mu.Unlock()
	// RFC 7252 §5.4.1: a response with an unrecognized critical option is
	// rejected like one nobody is waiting for (§4.2, §4.3).
	_, badOpt := m.Options.UnrecognizedCritical(nil)
	if badOpt {
		e.stats.BadOption.Add(1)
	}
	if !known || badOpt {
		e.stats.UnmatchedResponses.Add(1)
		r.out = appendEmpty(r.out[:0], message.Reset, m.MessageID)
		e.stats.ResetsSent.Add(1)
		e.dedup.complete(ref, r.out)
		e.writeR(r, r.out, &from)
		return
	}
	if con {
		r.out = appendEmpty(r.out[:0], message.Acknowledgement, m.MessageID)
		e.dedup.complete(ref, r.out)
		e.writeR(r, r.out, &from)
	}
	e.deliver(cloneMessage(data), from)
}

// deliver hands a response to its token registration.
func (e *Endpoint) deliver(resp *message.Message, from peerAddr) {
	key := makeTokenKey(from.key, resp.Token)
	e.mu.Lock()
	reg := e.tokens[key]
	var og *outgoing
	if reg != nil {
		og, reg.og = reg.og, nil
		reg.delivered = true
	}
	e.mu.Unlock()
	if reg == nil {
		return
	}
	// RFC 7252 §5.2.2: a separate response may overtake the empty ACK; stop
	// retransmitting the request either way.
	og.abandon()
	if !reg.fn(resp, from.netAddr(), nil) {
		e.unregister(key, reg)
	}
}

// exchangeSent reports whether the request of the exchange with token to
// peer has left (its first transmission was written): false while it
// waits behind NSTART.
func (e *Endpoint) exchangeSent(peer net.Addr, token []byte) bool {
	key := makeTokenKey(resolvePeer(peer).key, token)
	e.mu.Lock()
	defer e.mu.Unlock()
	reg := e.tokens[key]
	if reg == nil || reg.og == nil {
		return true // answered, ended, or not bound to its transmission yet
	}
	return reg.og.sentAt.Load() != 0
}

// Exchange sends request m (CON or NON) to peer and calls fn for every
// response carrying m's token: piggybacked, separate, and later notifications,
// until fn returns false or cancel is called. A random token is set when m has
// none. Transmission failures reach fn as ErrReset or ErrTimeout. m's
// MessageID is assigned here.
func (e *Endpoint) Exchange(peer net.Addr, m *message.Message, fn ResponseFunc) (cancel func(), err error) {
	return e.exchange(resolvePeer(peer), m, fn)
}

func (e *Endpoint) exchange(pk peerAddr, m *message.Message, fn ResponseFunc) (func(), error) {
	if !m.Code.IsRequest() {
		return nil, ErrMessageType
	}
	if len(m.Token) == 0 {
		m.Token = NewToken()
	}
	key := makeTokenKey(pk.key, m.Token)
	reg := &tokenReg{fn: fn, request: true}
	e.mu.Lock()
	if e.tokens == nil {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := e.tokens[key]; ok {
		e.mu.Unlock()
		return nil, ErrTokenInUse
	}
	e.tokens[key] = reg
	e.mu.Unlock()
	cancel := func() { e.unregister(key, reg) }
	var cb OutcomeFunc
	if m.Type == message.Confirmable {
		cb = func(o Outcome, _ *message.Message) {
			if o == Acknowledged {
				return
			}
			if e.unregister(key, reg) {
				fn(nil, pk.netAddr(), o.Err())
			}
		}
	}
	og, err := e.transmit(pk, m, cb, nstartRequest, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	// Bind the transmission to the registration so the first response (or
	// cancel) stops it and frees its NSTART slot. A response may already
	// have arrived, or the registration may be gone.
	e.mu.Lock()
	cur, ok := e.tokens[key]
	bound := ok && cur == reg && !reg.delivered
	if bound {
		reg.og = og
	}
	e.mu.Unlock()
	if !bound {
		og.abandon()
	}
	return cancel, nil
}

// Send transmits m to peer with a fresh message ID. For a CON it blocks until
// the peer acknowledges (returning the ACK, which may carry a piggybacked
// response), rejects it (ErrReset), retransmissions run out (ErrTimeout) or
// ctx ends. For a NON it returns after writing. Use it for notifications
// (RFC 7641 §4.2) and other messages outside a request/response pair.
func (e *Endpoint) Send(ctx context.Context, peer net.Addr, m *message.Message) (*message.Message, error) {
	if m.Type == message.NonConfirmable {
		_, err := e.transmit(resolvePeer(peer), m, nil, nstartNone, nil)
		return nil, err
	}
	type result struct {
		o   Outcome
		ack *message.Message
	}
	ch := make(chan result, 1)
	og, err := e.transmit(resolvePeer(peer), m, func(o Outcome, ack *message.Message) { ch <- result{o, ack} }, nstartCON, nil)
	if err != nil {
		return nil, err
	}
	select {
	case res := <-ch:
		return res.ack, res.o.Err()
	case <-ctx.Done():
		og.abandon()
		return nil, ctx.Err()
	}
}

// SendAsync transmits m to peer with a fresh message ID and reports the
// outcome to cb exactly once (if cb is non-nil): for a CON Acknowledged,
// ResetByPeer, TimedOut or Closed; for a NON ResetByPeer if an RST arrives
// within NON_LIFETIME, else NoReply. CONs respect NSTART.
func (e *Endpoint) SendAsync(peer net.Addr, m *message.Message, cb OutcomeFunc) error {
	_, err := e.transmit(resolvePeer(peer), m, cb, nstartCON, nil)
	return err
}

// sendNotification is SendAsync for a notification that returns its
// transmission, so that the caller can cancel it. A full peer table may
// give it up once it has gone unacknowledged for a while (see
// peerTable.yieldLocked).
func (e *Endpoint) sendNotification(peer net.Addr, m *message.Message, cb OutcomeFunc) (*outgoing, error) {
	return e.transmit(resolvePeer(peer), m, cb, nstartNotify, nil)
}

// sendNoted is SendAsync without an outcome callback whose noted learns the
// message ID before the datagram is written.
func (e *Endpoint) sendNoted(peer net.Addr, m *message.Message, noted func(mid uint16)) error {
	_, err := e.transmit(resolvePeer(peer), m, nil, nstartCON, noted)
	return err
}

// Ping sends an empty CON ("CoAP ping") to peer and reports whether it
// answered with RST, the expected reply (RFC 7252 §4.3).
func (e *Endpoint) Ping(ctx context.Context, peer net.Addr) error {
	_, err := e.Send(ctx, peer, &message.Message{Type: message.Confirmable, Code: message.Empty})
	switch {
	case errors.Is(err, ErrReset):
		return nil
	case err == nil:
		return fmt.Errorf("coap ping: %w: peer acknowledged instead of reset", ErrMessageType)
	}
	return fmt.Errorf("coap ping: %w", err)
}
