package coapside

import (
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

const (
	exPending   uint32 = iota // handler running, nothing sent
	exAcked                   // empty ACK sent: the response will be separate
	exResponded               // response sent
)

// serverExchange is one received request and its response, allocated once
// per request.
type serverExchange struct {
	e     *Endpoint
	from  peerAddr
	ref   dedupRef
	con   bool
	state atomic.Uint32
	timer timerItem // separate-response deadline

	req Request
	msg message.Message
	w   responseWriter
	// inline holds small datagrams so the private copy needs no allocation.
	inline [112]byte
}

// responseWriter implements ResponseWriter for a serverExchange.
type responseWriter struct {
	code     message.Code
	opts     message.Options
	payload  []byte
	optStore [4]message.Option
	small    [64]byte
}

// SetCode sets the response code.
func (w *responseWriter) SetCode(c message.Code) { w.code = c }

// Options returns the response options.
func (w *responseWriter) Options() *message.Options { return &w.opts }

// SetContentFormat sets the Content-Format option.
func (w *responseWriter) SetContentFormat(mt message.MediaType) {
	w.opts = w.opts.SetContentFormat(mt)
}

// Write appends to the payload.
func (w *responseWriter) Write(p []byte) (int, error) {
	w.payload = append(w.payload, p...)
	return len(p), nil
}

// defaultCode picks the success code for a handler that set none.
func defaultCode(method message.Code) message.Code {
	switch method {
	case message.GET, message.FETCH:
		return message.Content
	case message.DELETE:
		return message.Deleted
	}
	return message.Changed
}

// handleRequest deduplicates a request, rejects bad options and overload, and
// runs the handler inline on this reader.
func (e *Endpoint) handleRequest(r *reader, m *message.Message, data []byte, from peerAddr) {
	con := m.Type == message.Confirmable
	lifetime := e.p.NonLifetime
	if con {
		lifetime = e.p.ExchangeLifetime
	}
	// RFC 7252 §4.5: duplicates within EXCHANGE_LIFETIME (CON) or NON_LIFETIME
	// (NON) are not processed again; a CON's cached response is replayed.
	now := time.Now()
	ref, res, cached := e.dedup.begin(dedupKey{peer: from.key, mid: m.MessageID}, now, lifetime, r.scratch)
	// RFC 7252 §11.3: an unverified source gets nothing larger than
	// limit bytes in answer to this datagram.
	limit := e.responseLimit(m, len(data), from.key, now)
	switch res {
	case dedupDupBusy:
		e.stats.Duplicates.Add(1)
		return
	case dedupDupReplay:
		e.stats.Duplicates.Add(1)
		if con && limit > 0 && len(cached) > limit {
			// A short datagram reusing the message ID of a longer
			// request must not fetch the longer one's answer again.
			e.stats.AmplificationLimited.Add(1)
		} else if con {
			e.stats.DuplicateReplays.Add(1)
			e.writeR(r, cached, &from)
		}
		r.scratch = cached[:0]
		return
	}
	// RFC 7252 §5.4.1: an unrecognized critical option in a CON request is
	// answered 4.02 Bad Option; a NON request is rejected (RST, §4.3).
	if id, bad := m.Options.UnrecognizedCritical(nil); bad {
		e.stats.BadOption.Add(1)
		e.log.Debug("coap request with unrecognized critical option", "peer", from.netAddr().String(), "option", int(id))
		if con {
			e.replyDirect(r, m, from, ref, message.BadOption, 0, "unrecognized critical option "+id.String(), limit)
			return
		}
		e.sendReset(r, from, m.MessageID)
		return
	}
	// RFC 7252 §5.7.2: unless the handler is a forward-proxy.
	if (e.srv == nil || !e.srv.proxy) && (m.Options.Has(message.ProxyURI) || m.Options.Has(message.ProxyScheme)) {
		e.replyDirect(r, m, from, ref, message.ProxyingNotSupported, 0, "", limit)
		return
	}
	if e.srv == nil {
		e.replyDirect(r, m, from, ref, message.NotFound, 0, "", limit)
		return
	}
	if e.draining.Load() {
		e.replyDirect(r, m, from, ref, message.ServiceUnavailable, e.srv.overloadMaxAge, "shutting down", limit)
		return
	}
	if int(e.busy.Add(1)) > e.srv.maxConcurrent {
		e.busy.Add(-1)
		e.stats.Overloaded.Add(1)
		e.replyDirect(r, m, from, ref, message.ServiceUnavailable, e.srv.overloadMaxAge, "", limit)
		return
	}
	// One source's share of the handler slots, so that a host holding
	// slow requests cannot take every slot from the others.
	src := rateKey(&from)
	if e.srv.handlers.acquire(src) != quotaOK {
		e.busy.Add(-1)
		e.limits.hit(e.log, LimitHandlersPerSource, from.netAddr(), "running", e.srv.handlers.perSource)
		if con {
			e.replyDirect(r, m, from, ref, message.ServiceUnavailable, e.srv.overloadMaxAge, "", limit)
		}
		return // a NON is dropped: nothing goes back to a source already at its share
	}
	defer e.srv.handlers.release(src)
	e.stats.RequestsHandled.Add(1)
	x := &serverExchange{e: e, from: from, ref: ref, con: con}
	// Decode a private copy so the handler may retain anything it is given.
	var buf []byte
	if len(data) <= len(x.inline) {
		buf = x.inline[:len(data):len(data)]
	} else {
		buf = make([]byte, len(data))
	}
	copy(buf, data)
	_ = x.msg.Unmarshal(buf) // already validated above
	x.req = Request{
		Method:    x.msg.Code,
		Type:      x.msg.Type,
		MessageID: x.msg.MessageID,
		Token:     x.msg.Token,
		Options:   x.msg.Options,
		Payload:   x.msg.Payload,
		Peer:      from.netAddr(),
		ctx:       e.baseCtx,
		ep:        e,
		src:       from.key,
		limit:     limit,
	}
	x.w.opts = x.w.optStore[:0]
	x.w.payload = x.w.small[:0]
	e.enterBusy(r)
	b := r.batch
	if b == nil {
		x.run(r)
	} else {
		// Datagrams read together with this one must not wait for a slow
		// handler: after stealAfter they get goroutines of their own.
		armed := b.remaining()
		start := time.Now()
		if armed {
			e.sched.reschedule(&b.steal, start.Add(stealAfter))
		}
		x.run(r)
		if armed {
			e.sched.cancel(&b.steal)
		}
		if time.Since(start) > slowHandler {
			e.flush(r)
		}
	}
	e.leaveBusy(r)
	e.busy.Add(-1)
}

// run calls the handler, arming the separate-response deadline for a CON.
func (x *serverExchange) run(r *reader) {
	e := x.e
	if x.con {
		x.timer = timerItem{target: x, index: -1}
		e.sched.reschedule(&x.timer, time.Now().Add(e.p.SeparateAfter))
	}
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("coap handler panic", "path", x.req.Path(), "panic", p)
			x.w = responseWriter{code: message.InternalServerError}
		}
		x.finish(r)
	}()
	e.srv.handler.ServeCOAP(&x.w, &x.req)
}

// fire runs at the separate-response deadline: it sends an empty ACK when
// the handler is slow, so the client stops retransmitting (RFC 7252 §5.2.2).
func (x *serverExchange) fire(time.Time) {
	if !x.state.CompareAndSwap(exPending, exAcked) {
		return
	}
	ack := appendEmpty(make([]byte, 0, 4), message.Acknowledgement, x.msg.MessageID)
	// A duplicate of the request now gets the empty ACK again (§4.5).
	x.e.dedup.complete(x.ref, ack)
	x.e.write(ack, &x.from)
}

// finish sends the response: piggybacked on the ACK if possible, else as a
// separate CON (retransmitted) or, for a NON request, as a NON (§5.2.3).
func (x *serverExchange) finish(r *reader) {
	e := x.e
	resp := message.Message{
		Code:    x.w.code,
		Token:   x.msg.Token,
		Options: x.w.opts,
		Payload: x.w.payload,
	}
	if resp.Code == message.Empty {
		resp.Code = defaultCode(x.req.Method)
	}
	if noResponse(x.msg.Options, resp.Code) { // RFC 7967
		x.suppress(r)
		return
	}
	resp = e.bound(resp, x.req.limit, x.from.key)
	if resp.Options.Has(message.Echo) {
		e.stats.EchoChallenges.Add(1)
	}
	if x.con && x.state.CompareAndSwap(exPending, exResponded) {
		e.sched.cancel(&x.timer)
		resp.Type = message.Acknowledgement
		resp.MessageID = x.msg.MessageID
		out, err := resp.AppendBinary(r.out[:0])
		if err != nil {
			e.log.Warn("coap response encoding failed", "err", err)
			return
		}
		r.out = out
		e.dedup.complete(x.ref, out)
		e.writeR(r, out, &x.from)
		return
	}
	x.state.Store(exResponded)
	if x.con {
		resp.Type = message.Confirmable
		e.stats.SeparateResponses.Add(1)
	} else {
		resp.Type = message.NonConfirmable
	}
	if _, err := e.transmit(x.from, &resp, nil, nstartNone, nil); err != nil {
		e.log.Debug("coap response not sent", "peer", x.from.netAddr().String(), "err", err)
	}
}

// replyDirect answers a request without running a handler (errors, overload).
func (e *Endpoint) replyDirect(r *reader, m *message.Message, from peerAddr, ref dedupRef, code message.Code, maxAge uint32, diag string, limit int) {
	if e.replySuppressed(r, m, from, ref, code) { // RFC 7967
		return
	}
	resp := message.Message{Code: code, Token: m.Token}
	if code == message.ServiceUnavailable {
		// RFC 7252 §5.9.3.4: Max-Age tells the client when to retry.
		resp.Options = resp.Options.SetUint(message.MaxAge, maxAge)
	}
	if diag != "" {
		resp.Payload = []byte(diag)
	}
	resp = e.bound(resp, limit, from.key)
	if m.Type == message.Confirmable {
		resp.Type = message.Acknowledgement
		resp.MessageID = m.MessageID
		out, err := resp.AppendBinary(r.out[:0])
		if err != nil {
			return
		}
		r.out = out
		e.dedup.complete(ref, out)
		e.writeR(r, out, &from)
		return
	}
	resp.Type = message.NonConfirmable
	resp.Token = append([]byte(nil), m.Token...)
	_, _ = e.transmit(from, &resp, nil, nstartNone, nil)
}
