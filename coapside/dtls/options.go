package dtls

import (
	"log/slog"
	"time"
)

// Limits are the resource bounds shared by ServerConfig and ClientConfig.
// Zero values take the defaults noted on each field.
type Limits struct {
	// HandshakeTimeout bounds a whole handshake. Default 10s.
	HandshakeTimeout time.Duration
	// FlightInterval is the first retransmission interval of a handshake
	// flight (RFC 6347 §4.2.4). Default 1s.
	FlightInterval time.Duration
	// MaxHandshakes bounds concurrent handshakes. Default 128.
	MaxHandshakes int
	// MaxHandshakesPerSource bounds the concurrent handshakes from one IP
	// address (any port), so that one host cannot hold every slot of
	// MaxHandshakes: at the bound a new ClientHello from it takes the slot
	// of its own oldest handshake still waiting for the cookie, else it is
	// refused. Default 16, at most MaxHandshakes.
	MaxHandshakesPerSource int
	// MaxSessions bounds sessions, established or handshaking. Default 4096.
	MaxSessions int
	// IdleTimeout closes a session without traffic for this long. Default
	// 10m; negative disables expiry.
	IdleTimeout time.Duration
	// QueueLen is the per-peer queue of received records awaiting
	// decryption. Default 32.
	QueueLen int
	// ReadQueueLen is the queue of decrypted datagrams awaiting ReadFrom.
	// Default 256.
	ReadQueueLen int
	// ReadBufferSize is the largest datagram accepted. Default 8192.
	ReadBufferSize int
	// MTU bounds handshake records (pion fragments larger flights). Default
	// 1200.
	MTU int
	// ResumeSessions bounds the cache of sessions that can be resumed with
	// an abbreviated handshake (least recently used out first): on a
	// server by session ID, on a client by server address. Default
	// DefaultResumeSessions (10000); negative disables resumption.
	ResumeSessions int
	// ResumeLifetime is how long after its full handshake a session can
	// be resumed. Default DefaultResumeLifetime (24h).
	ResumeLifetime time.Duration
	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger
}

func (l *Limits) setDefaults() {
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = 10 * time.Second
	}
	if l.FlightInterval <= 0 {
		l.FlightInterval = time.Second
	}
	if l.MaxHandshakes <= 0 {
		l.MaxHandshakes = 128
	}
	if l.MaxHandshakesPerSource <= 0 {
		l.MaxHandshakesPerSource = 16
	}
	l.MaxHandshakesPerSource = min(l.MaxHandshakesPerSource, l.MaxHandshakes)
	if l.MaxSessions <= 0 {
		l.MaxSessions = 4096
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = 10 * time.Minute
	}
	if l.QueueLen <= 0 {
		l.QueueLen = 32
	}
	if l.ReadQueueLen <= 0 {
		l.ReadQueueLen = 256
	}
	if l.ReadBufferSize <= 0 {
		l.ReadBufferSize = 8192
	}
	if l.MTU <= 0 {
		l.MTU = 1200
	}
	if l.ResumeSessions == 0 {
		l.ResumeSessions = DefaultResumeSessions
	}
	if l.ResumeLifetime <= 0 {
		l.ResumeLifetime = DefaultResumeLifetime
	}
	if l.Logger == nil {
		l.Logger = discardLogger()
	}
}

func (l *Limits) endpointOptions(role string, touchOnWrite bool) endpointOptions {
	return endpointOptions{
		role:             role,
		log:              l.Logger.With("component", "dtls"),
		handshakeTimeout: l.HandshakeTimeout,
		idleTimeout:      l.IdleTimeout,
		maxHandshakes:    l.MaxHandshakes,
		maxSessions:      l.MaxSessions,
		queueLen:         l.QueueLen,
		readQueueLen:     l.ReadQueueLen,
		readBufferSize:   l.ReadBufferSize,
		touchOnWrite:     touchOnWrite,
	}
}
