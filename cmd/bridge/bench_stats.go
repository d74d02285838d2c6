package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"math"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// latencyHist is a log-linear histogram of durations with a relative
// error under 1.6 %: values below 128 ns have a bucket each, every octave
// above is split into 64 buckets. It is safe for concurrent use and its
// size does not grow with the number of samples, so a long run stays
// bounded in memory.
type latencyHist struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
	max    atomic.Int64  // nanoseconds, exact
}

const (
	histSubBits = 6
	histSub     = 1 << histSubBits // buckets per octave
	histLinear  = 2 * histSub      // values below this have their own bucket
	histBuckets = histLinear + (64-histSubBits)*histSub
)

// histIndex maps a duration in nanoseconds to its bucket.
//
//	v < 128:  bucket v
//	v >= 128: e = bitlen(v)-7, m = v>>e in [64,128): bucket 128 + (e-1)*64 + (m-64)
func histIndex(v uint64) int {
	if v < histLinear {
		return int(v)
	}
	e := bits.Len64(v) - (histSubBits + 1)
	m := v >> uint(e)
	return histLinear + (e-1)*histSub + int(m-histSub)
}

// histValue is the midpoint of bucket i, in nanoseconds.
func histValue(i int) uint64 {
	if i < histLinear {
		return uint64(i)
	}
	e := (i-histLinear)/histSub + 1
	m := uint64((i-histLinear)%histSub + histSub)
	return m<<uint(e) + (uint64(1)<<uint(e))/2
}

// Record adds one sample; a negative duration counts as zero.
func (h *latencyHist) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	v := uint64(d)
	h.counts[histIndex(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		cur := h.max.Load()
		if int64(d) <= cur || h.max.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// Count returns the number of samples.
func (h *latencyHist) Count() uint64 { return h.n.Load() }

// Quantile returns the q-quantile (0 < q <= 1), 0 without samples; the
// largest sample is reported exactly.
func (h *latencyHist) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	if rank >= n {
		return time.Duration(h.max.Load())
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(time.Duration(histValue(i)), time.Duration(h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

// summary reports the histogram with a rate over elapsed.
func (h *latencyHist) summary(elapsed time.Duration) *benchLatency {
	n := h.Count()
	s := &benchLatency{
		Count: n,
		P50Ms: ms(h.Quantile(0.50)),
		P99Ms: ms(h.Quantile(0.99)),
		MaxMs: ms(time.Duration(h.max.Load())),
	}
	if n > 0 {
		s.MeanMs = ms(time.Duration(h.sum.Load() / n))
	}
	if elapsed > 0 {
		s.Rate = float64(n) / elapsed.Seconds()
	}
	return s
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// seqSet records which sequence numbers were seen, growing as needed
// (one bit per number); it is safe for concurrent use.
type seqSet struct {
	mu   sync.Mutex
	bits []uint64
	n    uint64 // distinct numbers set
}

// Add marks seq and reports whether it was new.
func (s *seqSet) Add(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := int(seq / 64)
	if w >= len(s.bits) {
		s.bits = append(s.bits, make([]uint64, w-len(s.bits)+1+len(s.bits)/2)...)
	}
	b := uint64(1) << (seq % 64)
	if s.bits[w]&b != 0 {
		return false
	}
	s.bits[w] |= b
	s.n++
	return true
}

// Len returns the number of distinct sequence numbers added.
func (s *seqSet) Len() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Missing counts the numbers in s that are not in other.
func (s *seqSet) Missing(other *seqSet) uint64 {
	s.mu.Lock()
	a := append([]uint64(nil), s.bits...)
	s.mu.Unlock()
	other.mu.Lock()
	defer other.mu.Unlock()
	var n int
	for i, w := range a {
		if i < len(other.bits) {
			w &^= other.bits[i]
		}
		n += bits.OnesCount64(w)
	}
	return uint64(n)
}

// EachMissing calls fn with every number in s that is not in other, in
// increasing order.
func (s *seqSet) EachMissing(other *seqSet, fn func(seq uint64)) {
	s.mu.Lock()
	a := append([]uint64(nil), s.bits...)
	s.mu.Unlock()
	other.mu.Lock()
	for i := range a {
		if i < len(other.bits) {
			a[i] &^= other.bits[i]
		}
	}
	other.mu.Unlock()
	for i, w := range a {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			fn(uint64(i)*64 + uint64(b))
			w &= w - 1
		}
	}
}

// benchMarker writes and reads the payload a benchmark sends through the
// bridge: "bench <run> <seq> <sent>" padded with '.' to a size, where run
// tells this run's messages from any others on the topic and sent is the
// send time in nanoseconds since the run's clock started (monotonic, the
// same process reads it back).
type benchMarker struct {
	run   string
	start time.Time
	pre   []byte // "bench <run> "
	// payloadKey is where a command result's payload starts with pre.
	payloadKey []byte
}

func newBenchMarker() *benchMarker {
	var b [4]byte
	_, _ = rand.Read(b[:])
	run := hex.EncodeToString(b[:])
	return &benchMarker{run: run, start: time.Now(), pre: []byte("bench " + run + " "), payloadKey: []byte(`"payload":"bench ` + run + " ")}
}

// now is the run's clock.
func (m *benchMarker) now() time.Duration { return time.Since(m.start) }

// Encode returns the payload for seq sent at the run clock's at, at least
// size bytes long.
func (m *benchMarker) Encode(seq uint64, at time.Duration, size int) []byte {
	b := make([]byte, 0, max(size, 48))
	b = append(b, m.pre...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(at), 10)
	for len(b) < size {
		b = append(b, '.')
	}
	return b
}

// Decode parses a payload of this run; ok is false for anything else
// (another run's messages, initial responses, foreign publishers).
func (m *benchMarker) Decode(p []byte) (seq uint64, at time.Duration, ok bool) {
	rest, found := bytes.CutPrefix(p, m.pre)
	if !found {
		return 0, 0, false
	}
	sp := bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return 0, 0, false
	}
	seq, err := strconv.ParseUint(string(rest[:sp]), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	rest = rest[sp+1:]
	end := bytes.IndexByte(rest, '.')
	if end < 0 {
		end = len(rest)
	}
	ns, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return seq, time.Duration(ns), true
}

// storeMax raises a to v if v is larger.
func storeMax(a *atomic.Int64, v time.Duration) {
	for {
		cur := a.Load()
		if int64(v) <= cur || a.CompareAndSwap(cur, int64(v)) {
			return
		}
	}
}
