package mqttside

import "sync/atomic"

// Stats is a snapshot of a client's counters, for export as metrics.
type Stats struct {
	Published   uint64 // messages the broker has (acknowledged or handed over)
	Failed      uint64 // accepted messages that could not be delivered (e.g. dropped at Close)
	Buffered    uint64 // messages that went through the offline buffer
	DroppedQoS0 uint64 // QoS 0 messages dropped from a full offline buffer
	Refused     uint64 // QoS 1/2 publishes refused with ErrBufferFull
	Invalid     uint64 // publishes rejected by validation (topic, QoS, payload size)
	Withdrawn   uint64 // publishes taken back out of the offline buffer by PublishOrWithdraw, never sent
	Requeued    uint64 // QoS 1/2 sends cut by a disconnect, kept in the session store and resent after reconnect
	Received    uint64 // deliveries handed to handlers
	// SubscriberDrops counts messages the embedded broker dropped on their
	// way to one of its clients instead of delivering them: the client's
	// outbound queue or in-flight quota was full, or a QoS 1/2 flow to it
	// expired. Always 0 for a remote broker (it keeps its own counts).
	SubscriberDrops uint64
	Reconnects      uint64 // successful connections after the first
	// ConnectAttempts counts connection attempts, the first and every
	// retry, successful or not.
	ConnectAttempts uint64
	BufferDepth     int  // messages waiting in the offline buffer now
	Connected       bool // State() == StateConnected
}

// counters are the live values behind Stats.
type counters struct {
	published   atomic.Uint64
	failed      atomic.Uint64
	buffered    atomic.Uint64
	droppedQoS0 atomic.Uint64
	refused     atomic.Uint64
	invalid     atomic.Uint64
	withdrawn   atomic.Uint64
	requeued    atomic.Uint64
	received    atomic.Uint64
	subDrops    atomic.Uint64
	reconnects  atomic.Uint64
	attempts    atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Published:       c.published.Load(),
		Failed:          c.failed.Load(),
		Buffered:        c.buffered.Load(),
		DroppedQoS0:     c.droppedQoS0.Load(),
		Refused:         c.refused.Load(),
		Invalid:         c.invalid.Load(),
		Withdrawn:       c.withdrawn.Load(),
		Requeued:        c.requeued.Load(),
		Received:        c.received.Load(),
		SubscriberDrops: c.subDrops.Load(),
		Reconnects:      c.reconnects.Load(),
		ConnectAttempts: c.attempts.Load(),
	}
}
