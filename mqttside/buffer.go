package mqttside

// pending is a message accepted by Publish and not yet settled. done has
// room for one result so settling never blocks.
type pending struct {
	msg  Message
	done chan error
	// handed is set (under Remote.mu) once the dispatcher has taken the
	// message from the buffer to give it to the connection; from then on
	// it can no longer be withdrawn.
	handed bool
}

func newPending(m Message) *pending {
	return &pending{msg: m, done: make(chan error, 1)}
}

// offlineBuffer is a bounded FIFO of pending publishes. Order is kept for
// everything it holds, hence per topic. When full:
//
//   - a QoS 0 message evicts the oldest buffered QoS 0 message; if every
//     buffered message is QoS 1/2 the new QoS 0 message itself is dropped;
//   - a QoS 1/2 message evicts the oldest buffered QoS 0 message if there
//     is one, and is refused with ErrBufferFull otherwise.
//
// Nothing is removed without being returned to the caller, who settles it.
// offlineBuffer is not safe for concurrent use.
type offlineBuffer struct {
	ring  []*pending // capacity limit
	head  int        // index of the oldest element
	n     int        // number of elements
	limit int
	qos0  int // number of QoS 0 elements
}

func newOfflineBuffer(limit int) *offlineBuffer {
	if limit < 1 {
		limit = 1
	}
	return &offlineBuffer{ring: make([]*pending, limit), limit: limit}
}

// Len returns the number of buffered messages.
func (b *offlineBuffer) Len() int { return b.n }

// Push appends p. It returns a message evicted to make room (to be settled
// with ErrDropped by the caller), and ErrDropped or ErrBufferFull when p
// itself was not accepted.
func (b *offlineBuffer) Push(p *pending) (evicted *pending, err error) {
	if b.n == b.limit {
		if b.qos0 == 0 {
			if p.msg.QoS == 0 {
				return nil, ErrDropped
			}
			return nil, ErrBufferFull
		}
		evicted = b.removeOldestQoS0()
	}
	b.ring[(b.head+b.n)%b.limit] = p
	b.n++
	if p.msg.QoS == 0 {
		b.qos0++
	}
	return evicted, nil
}

// PushFront puts p back at the head, for a message taken by Pop that could
// not be sent. It reports false if the buffer is full.
func (b *offlineBuffer) PushFront(p *pending) bool {
	if b.n == b.limit {
		return false
	}
	b.head = (b.head - 1 + b.limit) % b.limit
	b.ring[b.head] = p
	b.n++
	if p.msg.QoS == 0 {
		b.qos0++
	}
	return true
}

// Pop removes and returns the oldest message, or nil.
func (b *offlineBuffer) Pop() *pending {
	if b.n == 0 {
		return nil
	}
	p := b.ring[b.head]
	b.ring[b.head] = nil
	b.head = (b.head + 1) % b.limit
	b.n--
	if p.msg.QoS == 0 {
		b.qos0--
	}
	return p
}

// removeOldestQoS0 removes the oldest QoS 0 element.
func (b *offlineBuffer) removeOldestQoS0() *pending {
	for i := 0; i < b.n; i++ {
		if b.ring[(b.head+i)%b.limit].msg.QoS == 0 {
			return b.removeAt(i)
		}
	}
	return nil
}

// Remove takes p out of the buffer, keeping the order of the rest. It
// reports false if p is not in the buffer.
func (b *offlineBuffer) Remove(p *pending) bool {
	for i := 0; i < b.n; i++ {
		if b.ring[(b.head+i)%b.limit] == p {
			b.removeAt(i)
			return true
		}
	}
	return false
}

// removeAt removes the i-th oldest element, shifting the older elements
// before it one place towards the tail to keep order.
func (b *offlineBuffer) removeAt(i int) *pending {
	p := b.ring[(b.head+i)%b.limit]
	for j := i; j > 0; j-- {
		b.ring[(b.head+j)%b.limit] = b.ring[(b.head+j-1)%b.limit]
	}
	b.ring[b.head] = nil
	b.head = (b.head + 1) % b.limit
	b.n--
	if p.msg.QoS == 0 {
		b.qos0--
	}
	return p
}
