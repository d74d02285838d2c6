package coapside

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sync"
	"time"
)

// ServerOptions configures a Server.
type ServerOptions struct {
	EndpointOptions
	// MaxConcurrent bounds handlers running at once (256); beyond it requests
	// get 5.03 Service Unavailable with Max-Age (RFC 7252 §5.9.3.4).
	MaxConcurrent int
	// MaxConcurrentPerSource bounds the handlers running at once for one
	// source address (its IP; the port is not part of it), so that one
	// host holding slow requests cannot take every slot of MaxConcurrent
	// (DefaultMaxConcurrentPerSource, at most MaxConcurrent). Beyond it a
	// CON request gets 5.03 Service Unavailable with Max-Age and a NON
	// request is dropped; each is counted as LimitHandlersPerSource.
	MaxConcurrentPerSource int
	// OverloadMaxAge is the Max-Age in seconds sent with 5.03 (5).
	OverloadMaxAge uint32
	// RateLimit is the requests per second allowed from each source
	// address (its IP; the port is not part of it) on each socket; 0 turns
	// it off. Beyond it a source gets 4.29 Too Many Requests with Max-Age
	// (RFC 8516) once per Max-Age period and is otherwise dropped silently,
	// before anything is decoded.
	RateLimit float64
	// RateBurst is the size of each source's token bucket; 0 means RateLimit.
	RateBurst int
	// RateLimitSources bounds the sources tracked per socket (4096); beyond
	// it the bucket nearest to full is evicted.
	RateLimitSources int
	// RateBlock is how long a source that goes on flooding after being
	// refused — more refusals within a second than ten times its bucket,
	// and at least 1,000 — is dropped by the kernel before the server
	// reads its datagrams (a socket filter on Linux UDP sockets; up to
	// MaxBlockedSources at once); 0 turns it off. Only with RateLimit.
	RateBlock time.Duration
	// IdleReaders is how many idle read goroutines are kept per socket (2).
	IdleReaders int
	// Blockwise configures the block-wise layer (RFC 7959) every handler
	// runs behind.
	Blockwise BlockwiseOptions
	// Amplification bounds responses to sources that have not proved their
	// address (RFC 7252 §11.3, RFC 9175 §2.4).
	Amplification AmplificationOptions
	// Proxy hands requests carrying Proxy-Uri or Proxy-Scheme to the
	// handler, which then acts as a forward-proxy (RFC 7252 §5.7.2) and
	// answers 5.05 Proxying Not Supported for what it does not forward.
	// Without it the server answers every such request 5.05 itself.
	Proxy bool
}

// Server serves CoAP requests on any number of PacketConns (UDP, DTLS).
type Server struct {
	// Handler answers requests; nil means 4.04 for everything.
	Handler Handler
	// Options tune the message layer and concurrency.
	Options ServerOptions

	mu       sync.Mutex
	eps      map[*Endpoint]struct{}
	retired  StatsSnapshot // counters of endpoints that stopped
	shutdown bool
	bw       *Blockwise
}

// Serve runs the message layer on conn and blocks until Shutdown or Close
// (returning ErrServerClosed) or a fatal read error. The server owns conn.
// One server may serve several conns at once (UDP and DTLS, say); Serve on a
// conn it already serves returns ErrServerStarted and leaves that conn to
// the first call.
func (s *Server) Serve(conn net.PacketConn) error {
	h := s.Handler
	if h == nil {
		h = NotFoundHandler()
	}
	o := s.Options
	h, err := s.wrapBlockwise(h)
	if err != nil {
		_ = conn.Close()
		return err
	}
	cfg := &serverConfig{
		handler:        h,
		maxConcurrent:  o.MaxConcurrent,
		overloadMaxAge: o.OverloadMaxAge,
		idleReaders:    o.IdleReaders,
		limiter:        newRateLimiter(o.RateLimit, o.RateBurst, o.RateLimitSources),
		rateBlock:      o.RateBlock,
		ampOpts:        o.Amplification,
		proxy:          o.Proxy,
	}
	if cfg.maxConcurrent <= 0 {
		cfg.maxConcurrent = DefaultMaxConcurrent
	}
	perSource := o.MaxConcurrentPerSource
	if perSource <= 0 {
		perSource = DefaultMaxConcurrentPerSource
	}
	cfg.handlers = newSourceQuota(perSource, cfg.maxConcurrent)
	if cfg.overloadMaxAge == 0 {
		cfg.overloadMaxAge = DefaultOverloadMaxAge
	}
	if cfg.idleReaders <= 0 {
		cfg.idleReaders = DefaultIdleReaders
	}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		_ = conn.Close()
		return ErrServerClosed
	}
	for e := range s.eps {
		if sameConn(e.conn, conn) {
			s.mu.Unlock()
			return ErrServerStarted
		}
	}
	if s.eps == nil {
		s.eps = make(map[*Endpoint]struct{})
	}
	e := newEndpoint(conn, o.EndpointOptions, cfg)
	s.eps[e] = struct{}{}
	s.mu.Unlock()

	<-e.Done()
	s.mu.Lock()
	delete(s.eps, e)
	s.retired.add(e.Stats().Snapshot())
	closed := s.shutdown
	s.mu.Unlock()
	if closed {
		return ErrServerClosed
	}
	if err := e.Err(); err != nil {
		return fmt.Errorf("coap server: %w", err)
	}
	return ErrServerClosed
}

// sameConn reports whether a and b are one conn. Conns of a type that
// cannot be compared (a struct holding a slice, say) never count as the
// same, rather than panicking.
func sameConn(a, b net.PacketConn) bool {
	t := reflect.TypeOf(a)
	return t == reflect.TypeOf(b) && t.Comparable() && a == b
}

// ListenAndServe listens on the UDP address and serves it.
func (s *Server) ListenAndServe(addr string) error {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("coap server: %w", err)
	}
	return s.Serve(conn)
}

// Endpoints returns the endpoints currently serving, e.g. to send
// notifications or read Stats.
func (s *Server) Endpoints() []*Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Endpoint, 0, len(s.eps))
	for e := range s.eps {
		out = append(out, e)
	}
	return out
}

// Shutdown stops accepting requests (new ones get 5.03), waits for running
// handlers to finish or ctx to end, then closes every conn. It is idempotent;
// it returns ctx's error if handlers were still running when ctx ended.
func (s *Server) Shutdown(ctx context.Context) error {
	eps, err := s.drain(ctx)
	for _, e := range eps {
		if cerr := e.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
	}
	return err
}

// Drain is Shutdown without closing the conns: requests are refused with
// 5.03 once it is called, and it returns when no handler runs (or with
// ctx's error when ctx ends first), while the endpoints go on sending and
// taking responses, for example to the requests a client sends from them
// (ClientOptions.Endpoint). Shutdown or Close closes them.
func (s *Server) Drain(ctx context.Context) error {
	_, err := s.drain(ctx)
	return err
}

// drain refuses new requests and waits for the running handlers; it
// returns the endpoints served.
func (s *Server) drain(ctx context.Context) ([]*Endpoint, error) {
	s.mu.Lock()
	s.shutdown = true
	eps := make([]*Endpoint, 0, len(s.eps))
	for e := range s.eps {
		eps = append(eps, e)
		e.draining.Store(true)
	}
	s.mu.Unlock()
	var err error
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		busy := false
		for _, e := range eps {
			if e.busy.Load() > 0 {
				busy = true
			}
		}
		if !busy {
			break
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		case <-tick.C:
		}
	}
	return eps, err
}

// Close stops the server immediately without waiting for handlers.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Stats sums the counters of every conn the server has served, including
// conns that have stopped.
func (s *Server) Stats() StatsSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := s.retired
	for e := range s.eps {
		total.add(e.Stats().Snapshot())
	}
	return total
}

// Health reports whether every conn the server serves is still being read:
// it returns an error wrapping ErrStalled that names each listener with no
// reader for longer than a couple of seconds. The endpoint's watchdog
// starts a new reader when that happens; Health lets a supervisor see it.
func (s *Server) Health() error {
	var errs []error
	for _, e := range s.Endpoints() {
		if e.Stalled() {
			errs = append(errs, fmt.Errorf("%w: %s", ErrStalled, e.LocalAddr()))
		}
	}
	return errors.Join(errs...)
}
