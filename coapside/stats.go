package coapside

import "sync/atomic"

// Stats counts message-layer events with atomic counters; the bridge exports
// them as metrics. Read them with Snapshot.
type Stats struct {
	Received           atomic.Uint64 // datagrams read
	Sent               atomic.Uint64 // datagrams written, including retransmissions
	Retransmissions    atomic.Uint64 // CON retransmissions
	Timeouts           atomic.Uint64 // CONs that exhausted MAX_RETRANSMIT
	ResetsReceived     atomic.Uint64 // RST received
	ResetsSent         atomic.Uint64 // RST sent (malformed CON, ping, unmatched responses)
	MalformedRejected  atomic.Uint64 // malformed CON answered with RST (RFC 7252 §4.2)
	MalformedDropped   atomic.Uint64 // malformed NON/ACK/RST or unparsable header dropped (§4.3)
	BadOption          atomic.Uint64 // requests answered 4.02 for an unrecognized critical option (§5.4.1)
	Oversize           atomic.Uint64 // datagrams larger than MaxMessageSize dropped
	Duplicates         atomic.Uint64 // duplicate CON/NON detected (§4.5)
	DuplicateReplays   atomic.Uint64 // cached responses re-sent for duplicate CONs
	DedupEvictions     atomic.Uint64 // live dedup entries evicted because the table was full
	PeerEvictions      atomic.Uint64 // idle peers evicted because the peer table was full
	PeerYields         atomic.Uint64 // peers whose unacknowledged notifications were given up because the peer table was full
	Pings              atomic.Uint64 // empty CON answered with RST (CoAP ping, §4.3)
	UnmatchedAcks      atomic.Uint64 // ACK/RST that matched nothing we sent
	UnmatchedResponses atomic.Uint64 // responses with an unknown token (rejected with RST)
	SeparateResponses  atomic.Uint64 // responses sent after an empty ACK (§5.2.2)
	Overloaded         atomic.Uint64 // requests answered 5.03 because MaxConcurrent was reached
	WriteErrors        atomic.Uint64 // failed writes to the PacketConn
	ReadErrors         atomic.Uint64 // failed reads (excluding close)
	QueueOverflows     atomic.Uint64 // sends refused because a peer's NSTART queue was full
	RequestsHandled    atomic.Uint64 // requests passed to the handler
	StolenDatagrams    atomic.Uint64 // datagrams handed to a worker because a handler in their batch was slow
	ReaderRestarts     atomic.Uint64 // readers started by the watchdog because the conn was no longer read
	RateLimited        atomic.Uint64 // requests refused by the per-source rate limit (answered 4.29 or dropped)
	RateLimitReplies   atomic.Uint64 // 4.29 Too Many Requests sent (RFC 8516)
	RateLimitEvictions atomic.Uint64 // live rate-limit buckets evicted because the source table was full
	SourcesBlocked     atomic.Uint64 // sources dropped by the kernel for flooding past their rate limit (ServerOptions.RateBlock)
	Unreachable        atomic.Uint64 // ICMP port unreachable reported for a datagram sent (Linux); each fails what is pending for its destination

	EchoChallenges       atomic.Uint64 // Echo values sent to unverified sources, with 4.01 or a small first block (RFC 9175 §2.4)
	EchoVerified         atomic.Uint64 // source addresses verified by a returned Echo value
	EchoRejected         atomic.Uint64 // Echo values that were not ours, not for the source, or expired
	AmplificationLimited atomic.Uint64 // responses to unverified sources made smaller to keep the amplification bound
	VerifiedEvictions    atomic.Uint64 // verified addresses forgotten early because the table was full
}

// StatsSnapshot is a plain copy of Stats.
type StatsSnapshot struct {
	Received, Sent, Retransmissions, Timeouts, ResetsReceived, ResetsSent uint64
	MalformedRejected, MalformedDropped, BadOption, Oversize              uint64
	Duplicates, DuplicateReplays, DedupEvictions, PeerEvictions           uint64
	PeerYields                                                            uint64
	Pings, UnmatchedAcks, UnmatchedResponses, SeparateResponses           uint64
	Overloaded, WriteErrors, ReadErrors, QueueOverflows, RequestsHandled  uint64
	StolenDatagrams, ReaderRestarts                                       uint64
	RateLimited, RateLimitReplies, RateLimitEvictions, Unreachable        uint64
	SourcesBlocked                                                        uint64
	EchoChallenges, EchoVerified, EchoRejected                            uint64
	AmplificationLimited, VerifiedEvictions                               uint64
}

// Snapshot returns the current counter values.
func (s *Stats) Snapshot() StatsSnapshot {
	return StatsSnapshot{
		Received: s.Received.Load(), Sent: s.Sent.Load(), Retransmissions: s.Retransmissions.Load(),
		Timeouts: s.Timeouts.Load(), ResetsReceived: s.ResetsReceived.Load(), ResetsSent: s.ResetsSent.Load(),
		MalformedRejected: s.MalformedRejected.Load(), MalformedDropped: s.MalformedDropped.Load(),
		BadOption: s.BadOption.Load(), Oversize: s.Oversize.Load(),
		Duplicates: s.Duplicates.Load(), DuplicateReplays: s.DuplicateReplays.Load(),
		DedupEvictions: s.DedupEvictions.Load(), PeerEvictions: s.PeerEvictions.Load(),
		PeerYields: s.PeerYields.Load(),
		Pings:      s.Pings.Load(), UnmatchedAcks: s.UnmatchedAcks.Load(),
		UnmatchedResponses: s.UnmatchedResponses.Load(), SeparateResponses: s.SeparateResponses.Load(),
		Overloaded: s.Overloaded.Load(), WriteErrors: s.WriteErrors.Load(), ReadErrors: s.ReadErrors.Load(),
		QueueOverflows: s.QueueOverflows.Load(), RequestsHandled: s.RequestsHandled.Load(),
		StolenDatagrams: s.StolenDatagrams.Load(), ReaderRestarts: s.ReaderRestarts.Load(),
		RateLimited: s.RateLimited.Load(), RateLimitReplies: s.RateLimitReplies.Load(),
		RateLimitEvictions: s.RateLimitEvictions.Load(), Unreachable: s.Unreachable.Load(),
		SourcesBlocked: s.SourcesBlocked.Load(),
		EchoChallenges: s.EchoChallenges.Load(), EchoVerified: s.EchoVerified.Load(),
		EchoRejected: s.EchoRejected.Load(), AmplificationLimited: s.AmplificationLimited.Load(),
		VerifiedEvictions: s.VerifiedEvictions.Load(),
	}
}

// add accumulates o into s.
func (s *StatsSnapshot) add(o StatsSnapshot) {
	s.Received += o.Received
	s.Sent += o.Sent
	s.Retransmissions += o.Retransmissions
	s.Timeouts += o.Timeouts
	s.ResetsReceived += o.ResetsReceived
	s.ResetsSent += o.ResetsSent
	s.MalformedRejected += o.MalformedRejected
	s.MalformedDropped += o.MalformedDropped
	s.BadOption += o.BadOption
	s.Oversize += o.Oversize
	s.Duplicates += o.Duplicates
	s.DuplicateReplays += o.DuplicateReplays
	s.DedupEvictions += o.DedupEvictions
	s.PeerEvictions += o.PeerEvictions
	s.PeerYields += o.PeerYields
	s.Pings += o.Pings
	s.UnmatchedAcks += o.UnmatchedAcks
	s.UnmatchedResponses += o.UnmatchedResponses
	s.SeparateResponses += o.SeparateResponses
	s.Overloaded += o.Overloaded
	s.WriteErrors += o.WriteErrors
	s.ReadErrors += o.ReadErrors
	s.QueueOverflows += o.QueueOverflows
	s.RequestsHandled += o.RequestsHandled
	s.StolenDatagrams += o.StolenDatagrams
	s.ReaderRestarts += o.ReaderRestarts
	s.RateLimited += o.RateLimited
	s.RateLimitReplies += o.RateLimitReplies
	s.RateLimitEvictions += o.RateLimitEvictions
	s.SourcesBlocked += o.SourcesBlocked
	s.Unreachable += o.Unreachable
	s.EchoChallenges += o.EchoChallenges
	s.EchoVerified += o.EchoVerified
	s.EchoRejected += o.EchoRejected
	s.AmplificationLimited += o.AmplificationLimited
	s.VerifiedEvictions += o.VerifiedEvictions
}
