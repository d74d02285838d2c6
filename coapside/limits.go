package coapside

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/coap-mqtt/bridge/coapside/internal/loggate"
)

// DefaultMaxObserversPerSource is one source address's share of
// ObserveOptions.MaxObservers.
const DefaultMaxObserversPerSource = 1000

// Limit names one of the server's resource limits; its String is the
// config key that sets it and the "limit" label of its metric.
type Limit uint8

// The resource limits counted in LimitHits.
const (
	LimitObservers                Limit = iota // observers in total
	LimitObserversPerSource                    // observers of one source
	LimitBlock1Transfers                       // Block1 transfers in total
	LimitBlock1TransfersPerSource              // Block1 transfers of one source
	LimitBlock1Size                            // reassembled Block1 body size
	LimitPendingPerPeer                        // messages queued for one peer behind NSTART
	LimitHandlersPerSource                     // handlers running at once for one source
	numLimits
)

var limitNames = [numLimits]string{
	LimitObservers:                "observers",
	LimitObserversPerSource:       "observers_per_source",
	LimitBlock1Transfers:          "block1_transfers",
	LimitBlock1TransfersPerSource: "block1_transfers_per_source",
	LimitBlock1Size:               "block1_size",
	LimitPendingPerPeer:           "pending_per_peer",
	LimitHandlersPerSource:        "handlers_per_source",
}

func (l Limit) String() string {
	if l < numLimits {
		return limitNames[l]
	}
	return "unknown"
}

// Limits returns every Limit, for exporting their counters.
func Limits() []Limit {
	ls := make([]Limit, numLimits)
	for i := range ls {
		ls[i] = Limit(i)
	}
	return ls
}

// LimitHits counts the requests refused by each resource limit.
type LimitHits [numLimits]uint64

// limitCounter counts limit hits and logs them at Warn at most once a
// second per limit (Debug otherwise), so a flood costs bounded log lines.
type limitCounter struct {
	n    [numLimits]atomic.Uint64
	gate [numLimits]loggate.Gate
}

// hit counts one refusal by l of a request from peer and logs it.
func (c *limitCounter) hit(log *slog.Logger, l Limit, peer net.Addr, attrs ...any) {
	if l >= numLimits {
		return
	}
	total := c.n[l].Add(1)
	level, suppressed := c.gate[l].Level()
	if !log.Enabled(context.Background(), level) {
		return
	}
	p := ""
	if peer != nil {
		p = peer.String()
	}
	attrs = append(attrs, "limit", l.String(), "peer", p, "refused_total", total)
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	log.Log(context.Background(), level, "coap resource limit reached; request refused", attrs...)
}

// snapshot returns the counts.
func (c *limitCounter) snapshot() LimitHits {
	var h LimitHits
	for i := range h {
		h[i] = c.n[i].Load()
	}
	return h
}

// sourceOf is the source a per-source limit counts a peer by: its IP
// address for UDP (so a host cannot escape a limit by changing ports),
// the rate limiter's key otherwise.
func sourceOf(a net.Addr) rlKey {
	p := addrPeer(a)
	return rateKey(&p)
}

// String returns the source as text.
func (k rlKey) String() string {
	if k.str != "" {
		return k.str
	}
	return k.ip.String()
}

// quotaVerdict is what a sourceQuota decides.
type quotaVerdict uint8

const (
	quotaOK        quotaVerdict = iota // taken
	quotaPerSource                     // the source holds its share
	quotaTotal                         // the pool is full
)

// sourceQuota counts holders of one resource per source and in total and
// refuses a new holder beyond either bound, so that one source can never
// take the whole pool.
type sourceQuota struct {
	perSource, total int

	mu sync.Mutex
	n  int
	by map[rlKey]int
}

func newSourceQuota(perSource, total int) *sourceQuota {
	return &sourceQuota{perSource: min(perSource, total), total: total, by: make(map[rlKey]int)}
}

// acquire takes one unit for k, or reports which bound refuses it. The
// source's own bound is checked first.
func (q *sourceQuota) acquire(k rlKey) quotaVerdict {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.by[k] >= q.perSource {
		return quotaPerSource
	}
	if q.n >= q.total {
		return quotaTotal
	}
	q.by[k]++
	q.n++
	return quotaOK
}

// release gives back one unit of k.
func (q *sourceQuota) release(k rlKey) {
	q.mu.Lock()
	defer q.mu.Unlock()
	c, ok := q.by[k]
	if !ok {
		return
	}
	if c <= 1 {
		delete(q.by, k)
	} else {
		q.by[k] = c - 1
	}
	q.n--
}
