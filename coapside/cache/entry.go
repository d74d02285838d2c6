package cache

import (
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// DefaultMaxAge is the freshness of a response without a Max-Age option,
// in seconds (RFC 7252 §5.10.5).
const DefaultMaxAge = 60

// Entry is a stored response. Once given to Cache.Put it is immutable: the
// cache never modifies it (a revalidation or invalidation stores a modified
// copy), and whoever receives it from the cache must not modify it or the
// slices it references.
type Entry struct {
	Code          message.Code // 2.05 only is stored by the bridge, but any code may be
	ContentFormat int          // -1: none
	Payload       []byte
	ETag          []byte // nil: none
	// MaxAge is the freshness in seconds counted from Stored, as received
	// (DefaultMaxAge when the response had none, RFC 7252 §5.10.5).
	MaxAge uint32
	// Stored is when the response was received or last revalidated; Put
	// sets it to the cache's clock when it is zero.
	Stored time.Time
	// Options are the other response options to replay with the
	// representation; never Content-Format, ETag or Max-Age, which have
	// fields of their own. May be nil.
	Options message.Options
}

// Remaining returns the seconds of freshness left at now (0 when stale) and
// whether the entry is fresh: it is while less than MaxAge seconds have
// passed since Stored (RFC 7252 §5.6.1), so an entry with MaxAge 0 is never
// fresh. The seconds are rounded down: they are the Max-Age to send with a
// response served from the cache (§5.7.1), and may be 0 during the last
// second of freshness.
func (e *Entry) Remaining(now time.Time) (uint32, bool) {
	age := max(now.Sub(e.Stored), 0)
	left := time.Duration(e.MaxAge)*time.Second - age
	if left <= 0 {
		return 0, false
	}
	return uint32(left / time.Second), true
}

// size is the number of bytes the entry accounts for besides its key.
func (e *Entry) size() int64 {
	n := len(e.Payload) + len(e.ETag)
	for _, o := range e.Options {
		n += len(o.Value)
	}
	return int64(n)
}

// NewEntry builds the entry of a response received at now: code, payload
// and options as decoded. Content-Format, ETag and Max-Age (default 60) go to
// their fields; Observe, Block1, Block2, Size1, Size2, Echo and Request-Tag
// belong to the exchange that carried the response, not to the
// representation, and are dropped; the other options are kept to replay.
// The payload and option values are copied, so the entry does not alias the
// decode buffer.
func NewEntry(code message.Code, opts message.Options, payload []byte, now time.Time) *Entry {
	e := &Entry{Code: code, ContentFormat: -1, MaxAge: opts.MaxAge(), Stored: now}
	if cf, ok := opts.ContentFormat(); ok {
		e.ContentFormat = int(cf)
	}
	n := len(payload)
	for _, o := range opts {
		n += len(o.Value)
	}
	buf := make([]byte, 0, n)
	if len(payload) > 0 {
		buf = append(buf, payload...)
		e.Payload = buf[:len(payload):len(payload)]
	}
	for _, o := range opts {
		switch o.ID {
		case message.ContentFormat, message.MaxAge,
			message.Observe, message.Block1, message.Block2, message.Size1, message.Size2,
			message.Echo, message.RequestTag:
			continue
		case message.ETag:
			if e.ETag != nil || len(o.Value) == 0 {
				continue // one ETag per response (RFC 7252 §5.10.6.1)
			}
		}
		start := len(buf)
		buf = append(buf, o.Value...)
		v := buf[start:len(buf):len(buf)]
		if o.ID == message.ETag {
			e.ETag = v
			continue
		}
		e.Options = append(e.Options, message.Option{ID: o.ID, Value: v})
	}
	return e
}
