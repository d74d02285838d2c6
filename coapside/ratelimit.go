package coapside

import (
	"context"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// DefaultRateLimitSources is how many source addresses the rate limiter
// tracks at once per socket.
const DefaultRateLimitSources = 4096

// rateLogEvery bounds the "source over its rate limit" log line to one per
// interval per socket; the counters count every refusal.
const rateLogEvery = 10 * time.Second

// rlWays is the associativity of the rate limiter's table: a source
// competes for a slot with the sources hashed to the same set only.
const rlWays = 8

// rateVerdict is what the rate limiter decides for one request.
type rateVerdict uint8

const (
	rateAllow rateVerdict = iota // within the limit: serve it
	rateReply                    // over the limit: answer 4.29 once
	rateDrop                     // over the limit and already told: drop silently
	rateBlock                    // over the limit long after being told: drop and block the source
)

// rlKey is the source of a request: its IP address (the port is not part
// of it, so a host cannot escape its limit by changing ports), or the
// string form of a non-UDP address (a DTLS session, say).
type rlKey struct {
	ip  netip.Addr
	str string
}

// rlEntry is one source's token bucket as a theoretical arrival time
// (GCRA): the bucket is full when tat <= now, and a request is allowed
// when tat+interval-now stays within the burst tolerance.
type rlEntry struct {
	key    rlKey
	tat    int64 // unix ns; 0 = free slot
	silent int64 // unix ns: further refusals until then are dropped without a 4.29
	// refused counts refusals since refusedAt, a window of a second.
	refusedAt int64
	refused   int32
	present   bool
}

type rlSet struct {
	mu   sync.Mutex
	ways [rlWays]rlEntry
}

// rateLimiter holds a token bucket per source address in a fixed-size
// set-associative table, so a flood from many (spoofed) sources cannot grow
// memory: a new source takes a free or full bucket's slot, else evicts the
// bucket nearest to full (counted in RateLimitEvictions).
type rateLimiter struct {
	interval  int64 // ns per token: 1/rate
	tolerance int64 // ns: burst * interval
	sets      []rlSet
	mask      uint64
	seed      maphash.Seed
	// blockAfter is how many refusals within a second make a source one to
	// block (rateBlock); 0 never blocks.
	blockAfter int32
}

// blockWindow is the window in which a source refused more than
// blockAfter times is blocked.
const blockWindow = int64(time.Second)

// minBlockAfter is the least number of refusals within blockWindow that
// blocks a source, however small its bucket: a client that overshoots (a
// burst of a few hundred, a retry loop) is refused, not blocked.
const minBlockAfter = 1000

// blockAfterRefusals returns the refusals within a second that mark a
// source as flooding: ten times its bucket, so it went on sending at more
// than ten times its limit after being told to wait, and at least
// minBlockAfter.
func blockAfterRefusals(burst int) int32 {
	return int32(min(max(10*burst, minBlockAfter), 1<<30))
}

// newRateLimiter returns a limiter allowing rate requests per second with
// bursts of burst (0 = rate, at least 1) from each of up to sources sources;
// nil when rate <= 0.
func newRateLimiter(rate float64, burst, sources int) *rateLimiter {
	if rate <= 0 {
		return nil
	}
	interval := int64(float64(time.Second) / rate)
	if interval < 1 {
		interval = 1
	}
	if burst <= 0 {
		burst = int(rate)
	}
	if burst < 1 {
		burst = 1
	}
	if sources <= 0 {
		sources = DefaultRateLimitSources
	}
	n := 1
	for n*rlWays < sources {
		n <<= 1
	}
	return &rateLimiter{
		interval:  interval,
		tolerance: int64(burst) * interval,
		sets:      make([]rlSet, n),
		mask:      uint64(n - 1),
		seed:      maphash.MakeSeed(),
	}
}

// blockFloods makes take answer rateBlock for a source refused more than
// ten times its burst (at least minBlockAfter) times within a second.
func (l *rateLimiter) blockFloods() {
	l.blockAfter = blockAfterRefusals(int(l.tolerance / l.interval))
}

func (l *rateLimiter) hash(k rlKey) uint64 {
	if k.str != "" {
		return maphash.String(l.seed, k.str)
	}
	b := k.ip.As16()
	return maphash.Bytes(l.seed, b[:])
}

// take spends one token of k's bucket at now (unix ns). Over the limit it
// returns rateReply with the Max-Age in seconds until a token is available
// (RFC 8516 §4) once per such period, and rateDrop otherwise — or
// rateBlock once k has been refused more than blockAfter times within a
// second. evicted reports that a live bucket lost its slot to k.
func (l *rateLimiter) take(k rlKey, now int64) (v rateVerdict, maxAge uint32, evicted bool) {
	s := &l.sets[l.hash(k)&l.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.find(k)
	if e == nil {
		e, evicted = s.victim(now)
		*e = rlEntry{key: k, present: true}
	}
	tat := max(e.tat, now) + l.interval
	if tat-now <= l.tolerance {
		e.tat = tat
		return rateAllow, 0, evicted
	}
	if l.blockAfter > 0 {
		if now-e.refusedAt >= blockWindow {
			e.refusedAt, e.refused = now, 0
		}
		if e.refused++; e.refused > l.blockAfter {
			e.refusedAt, e.refused = now, 0
			return rateBlock, 0, evicted
		}
	}
	if now < e.silent {
		return rateDrop, 0, evicted
	}
	wait := tat - now - l.tolerance // until the next token
	secs := (wait + int64(time.Second) - 1) / int64(time.Second)
	secs = max(secs, 1)
	if secs > 1<<32-1 {
		secs = 1<<32 - 1
	}
	e.silent = now + secs*int64(time.Second)
	return rateReply, uint32(secs), evicted
}

func (s *rlSet) find(k rlKey) *rlEntry {
	for i := range s.ways {
		if s.ways[i].present && s.ways[i].key == k {
			return &s.ways[i]
		}
	}
	return nil
}

// victim picks the slot for a new source: a free one, or one whose bucket
// is full again and not in a silent period (forgetting it changes
// nothing), else the live bucket with the least debt (evicted).
func (s *rlSet) victim(now int64) (*rlEntry, bool) {
	var best *rlEntry
	for i := range s.ways {
		e := &s.ways[i]
		if !e.present || (e.tat <= now && e.silent <= now) {
			return e, false
		}
		if best == nil || e.tat < best.tat {
			best = e
		}
	}
	return best, true
}

// rateKey is the rate limiter's key for a peer.
func rateKey(p *peerAddr) rlKey {
	if p.key.str != "" {
		return rlKey{str: p.key.str}
	}
	return rlKey{ip: p.key.ap.Addr()}
}

// isRequestHeader reports whether data starts like a CoAP request: version
// 1, CON or NON, code class 0 and not Empty (RFC 7252 §3). Only the fixed
// header is looked at, so refusing costs no decoding.
func isRequestHeader(data []byte) bool {
	if len(data) < 4 || data[0]>>6 != 1 {
		return false
	}
	t := message.Type(data[0] >> 4 & 3)
	if t != message.Confirmable && t != message.NonConfirmable {
		return false
	}
	return data[1] != 0 && data[1]>>5 == 0
}

// rateLimited applies the per-source rate limit to a request datagram
// before anything is decoded. It reports whether the datagram was refused:
// answered 4.29 Too Many Requests with Max-Age (RFC 8516) at most once per
// Max-Age period per source, otherwise dropped silently.
func (e *Endpoint) rateLimited(r *reader, data []byte, from *peerAddr) bool {
	l := e.srv.limiter
	if !isRequestHeader(data) {
		return false
	}
	var now int64
	if r.batch != nil {
		now = r.batch.now
	}
	if now == 0 {
		now = time.Now().UnixNano()
	}
	v, maxAge, evicted := l.take(rateKey(from), now)
	if evicted {
		e.stats.RateLimitEvictions.Add(1)
	}
	if v == rateAllow {
		return false
	}
	e.stats.RateLimited.Add(1)
	if v == rateBlock {
		e.blockSource(from, now)
		return true
	}
	if last := e.srv.rateLogged.Load(); now-last >= int64(rateLogEvery) && e.srv.rateLogged.CompareAndSwap(last, now) {
		e.log.Warn("coap source over its rate limit; requests refused", "peer", from.netAddr().String(), "refused_total", e.stats.RateLimited.Load())
	}
	if v == rateReply {
		e.sendTooMany(r, data, from, maxAge)
	}
	return true
}

// sendTooMany answers a refused request with 4.29 and Max-Age, as an ACK
// for a CON and as a NON for a NON; nothing when the request asks for no
// 4.xx (RFC 7967) or the answer would be larger than the request.
func (e *Endpoint) sendTooMany(r *reader, data []byte, from *peerAddr, maxAge uint32) {
	m := &r.msg
	if err := m.Unmarshal(data); err != nil {
		return // malformed: not worth an answer
	}
	var mid uint16
	if m.Type != message.Confirmable {
		var err error
		if mid, err = e.peers.nextMID(from.key, time.Now()); err != nil {
			return
		}
	}
	out, ok := appendTooMany(r.out[:0], m, len(data), maxAge, mid)
	r.out = out
	if !ok {
		return
	}
	if out[1] == byte(message.TooManyRequests) {
		e.stats.RateLimitReplies.Add(1)
	}
	e.writeR(r, out, from)
}

// appendTooMany appends the answer to request m (reqLen bytes on the wire)
// refused by the rate limit: 4.29 Too Many Requests with Max-Age (RFC 8516
// §4), piggybacked on the ACK of a CON or as a NON with message ID mid; an
// empty ACK when a CON asks for no 4.xx answer (RFC 7967). ok is false
// when nothing is to be sent: a NON asking for no 4.xx, or an answer that
// would be larger than the request, which a spoofed source must not be
// able to amplify (RFC 7252 §11.3).
func appendTooMany(dst []byte, m *message.Message, reqLen int, maxAge uint32, mid uint16) (out []byte, ok bool) {
	con := m.Type == message.Confirmable
	if noResponse(m.Options, message.TooManyRequests) {
		if !con {
			return dst, false
		}
		return appendEmpty(dst, message.Acknowledgement, m.MessageID), true
	}
	resp := message.Message{Code: message.TooManyRequests, Token: m.Token, Type: message.Acknowledgement, MessageID: m.MessageID}
	if !con {
		resp.Type, resp.MessageID = message.NonConfirmable, mid
	}
	resp.Options = resp.Options.SetUint(message.MaxAge, maxAge)
	start := len(dst)
	out, err := resp.AppendBinary(dst)
	if err != nil || len(out)-start > reqLen {
		return dst, false
	}
	return out, true
}

// blockSource has the kernel drop a source that goes on flooding after
// its refusals (ServerOptions.RateBlock), counted in SourcesBlocked and
// logged at Warn at most once a second.
func (e *Endpoint) blockSource(from *peerAddr, now int64) {
	b := e.srv.block
	if b == nil || !from.key.ap.IsValid() {
		return
	}
	added, err := b.add(from.key.ap.Addr(), time.Unix(0, now))
	if err != nil {
		e.log.Warn("coap sources cannot be blocked on this socket; the rate limit alone sheds floods", "err", err)
		return
	}
	if !added {
		return
	}
	total := e.stats.SourcesBlocked.Add(1)
	level, suppressed := e.blockGate.Level()
	if e.log.Enabled(context.Background(), level) {
		attrs := []any{"peer", from.key.ap.Addr().String(), "duration", b.dur, "blocked_total", total}
		if suppressed > 0 {
			attrs = append(attrs, "suppressed", suppressed)
		}
		e.log.Log(context.Background(), level, "coap source flooding after its rate limit; dropped by the kernel", attrs...)
	}
}

// BlockedSources returns the source addresses whose datagrams the kernel
// drops now because they flooded past their rate limit
// (ServerOptions.RateBlock), sorted.
func (e *Endpoint) BlockedSources() []netip.Addr {
	if e.srv == nil || e.srv.block == nil {
		return nil
	}
	return e.srv.block.blocked()
}

// KernelDrops returns how many datagrams the kernel dropped before this
// endpoint read them — its receive buffer was full or their source was
// blocked — and whether the system reports it (Linux UDP sockets).
func (e *Endpoint) KernelDrops() (uint64, bool) {
	if e.udp == nil {
		return 0, false
	}
	return socketDrops(e.udp)
}
