package bridge

import (
	"strings"
	"sync"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// recentErrorsSize bounds the ring of recent errors the console shows.
const recentErrorsSize = 256

// recentErrorEvery spaces the entries one (rule, reason) adds to the ring:
// an error repeating faster is counted on its latest entry, so a flood of
// one failure neither allocates nor pushes the other failures out.
const recentErrorEvery = time.Second

// recentErrorDetailMax bounds the text kept of an error.
const recentErrorDetailMax = 240

// errorDetail says what a counted rule error was about, for the ring of
// recent errors: the device (when known), the CoAP code the bridge
// answered or a device answered, and the error (an MQTT reason code is in
// its text).
type errorDetail struct {
	device   string
	code     message.Code // 0: none
	codeText string       // a code already in text ("4.04"), when code is 0
	err      error
	errText  string // an error already in text, when err is nil
}

// ruleError counts an error of rule for reason and enters it in the ring
// of recent errors, and for its device when metrics.per_device is on.
func (m *metrics) ruleError(rule, reason string, d errorDetail) {
	m.errors.WithLabelValues(rule, reason).Inc()
	m.devices.failed(d.device, reason)
	m.recent.add(rule, reason, d)
}

// RecentError is one entry of the console's recent errors.
type RecentError struct {
	Time   time.Time `json:"time"`
	Rule   string    `json:"rule"`
	Reason string    `json:"reason"`
	Device string    `json:"device,omitempty"`
	// CoAPCode is the CoAP code answered ("4.04"), when there was one.
	CoAPCode string `json:"coap_code,omitempty"`
	// Error is the error's text, cut to a few hundred bytes; it carries
	// the MQTT reason code of a refused publish.
	Error string `json:"error,omitempty"`
	// Repeats counts the same (rule, reason) errors within a second after
	// this one, not entered on their own.
	Repeats uint64 `json:"repeats,omitempty"`
}

type recentKey struct{ rule, reason string }

// recentErrors is a bounded ring of rule errors, newest last. Entering
// one costs a lock and a map lookup; an entry (a few string copies) is
// made at most once a second per (rule, reason).
type recentErrors struct {
	mu    sync.Mutex
	ring  [recentErrorsSize]RecentError
	seqs  [recentErrorsSize]uint64 // the sequence number each slot was written with
	next  int                      // where the next entry goes
	n     int                      // entries held
	total uint64
	// last maps a (rule, reason) to its latest entry's position and the
	// sequence number it was written with (an overwritten slot is not
	// counted on).
	last map[recentKey]recentSlot
	seq  uint64
	now  func() time.Time
}

type recentSlot struct {
	at  int
	seq uint64
}

func newRecentErrors() *recentErrors {
	return &recentErrors{last: map[recentKey]recentSlot{}, now: time.Now}
}

// add records one error of rule for reason.
func (r *recentErrors) add(rule, reason string, d errorDetail) {
	if r == nil {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	k := recentKey{rule, reason}
	if s, ok := r.last[k]; ok && r.seqAt(s.at) == s.seq {
		e := &r.ring[s.at]
		if now.Sub(e.Time) < recentErrorEvery {
			e.Repeats++
			return
		}
	}
	if len(r.last) >= 4*recentErrorsSize {
		clear(r.last) // rules come and go with reloads: keep the index bounded
	}
	e := RecentError{Time: now, Rule: strings.Clone(rule), Reason: reason, Device: strings.Clone(d.device)}
	e.CoAPCode = d.codeText
	if d.code != 0 {
		e.CoAPCode = d.code.Dotted()
	}
	e.Error = d.errText
	if d.err != nil {
		e.Error = d.err.Error()
	}
	if e.Error != "" {
		if len(e.Error) > recentErrorDetailMax {
			e.Error = e.Error[:recentErrorDetailMax] + "…"
		}
	}
	if _, ok := r.last[k]; !ok {
		k = recentKey{e.Rule, reason} // the index keeps its own copy of the name
	}
	r.seq++
	r.ring[r.next] = e
	r.seqs[r.next] = r.seq
	r.last[k] = recentSlot{at: r.next, seq: r.seq}
	r.next = (r.next + 1) % recentErrorsSize
	r.n = min(r.n+1, recentErrorsSize)
}

func (r *recentErrors) seqAt(i int) uint64 { return r.seqs[i] }

// list returns up to limit entries, newest first, and how many errors
// were recorded in all (repeats included).
func (r *recentErrors) list(limit int) ([]RecentError, uint64) {
	if r == nil {
		return nil, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(limit, r.n)
	out := make([]RecentError, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.ring[(r.next-i+recentErrorsSize)%recentErrorsSize])
	}
	return out, r.total
}

// latestPer returns the newest entry of each rule in names that has one.
func (r *recentErrors) latestPer(names []string) map[string]RecentError {
	out := map[string]RecentError{}
	if r == nil || len(names) == 0 {
		return out
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := 1; i <= r.n && len(out) < len(want); i++ {
		e := &r.ring[(r.next-i+recentErrorsSize)%recentErrorsSize]
		if _, seen := out[e.Rule]; !seen && want[e.Rule] {
			out[e.Rule] = *e
		}
	}
	return out
}
