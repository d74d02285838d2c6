package observe

import "time"

// Observe option values are 24-bit sequence numbers (RFC 7641 §2, §4.4).
const (
	// SeqMask keeps the low 24 bits of a sequence number.
	SeqMask = 1<<24 - 1
	// seqHalf is 2^23, the window of the freshness rule.
	seqHalf = 1 << 23
	// FreshnessWindow is the time after which any notification is newer
	// than the previous one (RFC 7641 §3.4: 128 seconds).
	FreshnessWindow = 128 * time.Second
)

// Option values in a request (RFC 7641 §2).
const (
	// Register is the Observe value of a registration request.
	Register uint32 = 0
	// Deregister is the Observe value of a deregistration request.
	Deregister uint32 = 1
)

// NextSeq returns the sequence number after s, wrapping at 2^24.
func NextSeq(s uint32) uint32 { return (s + 1) & SeqMask }

// Newer applies the freshness rule of RFC 7641 §3.4 to the sequence numbers
// alone: V2 is newer than V1 when
//
//	(V1 < V2 and V2 - V1 < 2^23) or
//	(V1 > V2 and V1 - V2 > 2^23)
//
// Both values are reduced to 24 bits first. Equal values are not newer.
func Newer(v1, v2 uint32) bool {
	v1, v2 = v1&SeqMask, v2&SeqMask
	return (v1 < v2 && v2-v1 < seqHalf) || (v1 > v2 && v1-v2 > seqHalf)
}

// Fresh reports whether a notification with sequence number v2 received at
// t2 is newer than one with v1 received at t1 (RFC 7641 §3.4): either the
// sequence numbers say so, or more than 128 seconds passed between the two,
// after which the numbers may have wrapped.
func Fresh(v1 uint32, t1 time.Time, v2 uint32, t2 time.Time) bool {
	return Newer(v1, v2) || t2.Sub(t1) > FreshnessWindow
}
