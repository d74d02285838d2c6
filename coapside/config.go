package coapside

import (
	"log/slog"
	"time"
)

// Default transmission parameters (RFC 7252 §4.8).
const (
	DefaultAckTimeout      = 2 * time.Second
	DefaultAckRandomFactor = 1.5
	DefaultMaxRetransmit   = 4
	DefaultNStart          = 1
	DefaultMaxLatency      = 100 * time.Second
	DefaultProcessingDelay = 2 * time.Second
)

// Defaults of the implementation's own limits.
const (
	DefaultMaxMessageSize  = 1280
	DefaultMaxPeers        = 4096
	DefaultDedupCapacity   = 16384
	DefaultMaxConcurrent   = 256
	DefaultOverloadMaxAge  = 5
	DefaultMaxQueuePerPeer = 64
	DefaultIdleReaders     = 2
)

// DefaultMaxConcurrentPerSource is one source address's share of
// ServerOptions.MaxConcurrent.
const DefaultMaxConcurrentPerSource = 32

// EndpointOptions configures an Endpoint. Zero values take the defaults, so
// tests can shrink timing (AckTimeout in milliseconds) without touching the rest.
type EndpointOptions struct {
	// AckTimeout is ACK_TIMEOUT, the initial retransmission timeout (2 s).
	AckTimeout time.Duration
	// AckRandomFactor is ACK_RANDOM_FACTOR (1.5); values below 1 mean 1.
	AckRandomFactor float64
	// MaxRetransmit is MAX_RETRANSMIT (4). A negative value means 0.
	MaxRetransmit int
	// NStart is the number of outstanding confirmable messages per peer (1).
	NStart int
	// ExchangeLifetime bounds CON deduplication state; default derived per RFC 7252 §4.8.2.
	ExchangeLifetime time.Duration
	// NonLifetime bounds NON deduplication state; default derived per RFC 7252 §4.8.2.
	NonLifetime time.Duration
	// SeparateAfter is how long a handler may take before an empty ACK is sent
	// and the response becomes a separate one (RFC 7252 §5.2.2). Default AckTimeout/2.
	SeparateAfter time.Duration
	// MaxMessageSize is the largest datagram accepted (1280); bigger ones are dropped.
	MaxMessageSize int
	// MaxPeers bounds the per-peer table (message IDs, NSTART queues). An
	// endpoint without a server (a Client's own) keeps at most MaxPeers idle
	// peers but admits more while all have requests in flight.
	MaxPeers int
	// DedupCapacity bounds the deduplication table (entries).
	DedupCapacity int
	// MaxQueuePerPeer bounds messages waiting behind NSTART per peer.
	MaxQueuePerPeer int
	// DisableBatching turns off recvmmsg/sendmmsg on UDP sockets.
	DisableBatching bool
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// params are normalized options.
type params struct {
	EndpointOptions
	maxTransmitSpan time.Duration
	maxTransmitWait time.Duration
}

func (o EndpointOptions) normalize() params {
	if o.AckTimeout <= 0 {
		o.AckTimeout = DefaultAckTimeout
	}
	if o.AckRandomFactor == 0 {
		o.AckRandomFactor = DefaultAckRandomFactor
	}
	if o.AckRandomFactor < 1 {
		o.AckRandomFactor = 1
	}
	if o.MaxRetransmit == 0 {
		o.MaxRetransmit = DefaultMaxRetransmit
	}
	if o.MaxRetransmit < 0 {
		o.MaxRetransmit = 0
	}
	if o.NStart <= 0 {
		o.NStart = DefaultNStart
	}
	// RFC 7252 §4.8.2: MAX_TRANSMIT_SPAN = ACK_TIMEOUT * (2^MAX_RETRANSMIT - 1) * ACK_RANDOM_FACTOR
	// MAX_TRANSMIT_WAIT = ACK_TIMEOUT * (2^(MAX_RETRANSMIT+1) - 1) * ACK_RANDOM_FACTOR
	scale := func(n int) time.Duration {
		return time.Duration(float64(o.AckTimeout) * float64(n) * o.AckRandomFactor)
	}
	p := params{
		maxTransmitSpan: scale(1<<o.MaxRetransmit - 1),
		maxTransmitWait: scale(1<<(o.MaxRetransmit+1) - 1),
	}
	// RFC 7252 §4.8.2: EXCHANGE_LIFETIME = MAX_TRANSMIT_SPAN + 2*MAX_LATENCY + PROCESSING_DELAY,
	// NON_LIFETIME = MAX_TRANSMIT_SPAN + MAX_LATENCY.
	if o.ExchangeLifetime <= 0 {
		o.ExchangeLifetime = p.maxTransmitSpan + 2*DefaultMaxLatency + o.AckTimeout
	}
	if o.NonLifetime <= 0 {
		o.NonLifetime = p.maxTransmitSpan + DefaultMaxLatency
	}
	if o.SeparateAfter <= 0 {
		o.SeparateAfter = o.AckTimeout / 2
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.MaxPeers <= 0 {
		o.MaxPeers = DefaultMaxPeers
	}
	if o.DedupCapacity <= 0 {
		o.DedupCapacity = DefaultDedupCapacity
	}
	if o.MaxQueuePerPeer <= 0 {
		o.MaxQueuePerPeer = DefaultMaxQueuePerPeer
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p.EndpointOptions = o
	return p
}
