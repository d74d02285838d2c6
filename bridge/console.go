package bridge

import (
	"embed"
	"encoding/json"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
)

// The status page's assets: plain HTML, CSS and JavaScript, no build step
// and nothing fetched from elsewhere.
//
//go:embed console
var consoleAssets embed.FS

// Paging of /api/devices.
const (
	consoleDefaultLimit = 50
	consoleMaxLimit     = 500
	// consoleErrorsShown is how many recent errors /api/status carries;
	// /api/errors has all of the ring.
	consoleErrorsShown = 20
	// consoleRateWindow is the shortest interval rates are computed over:
	// requests closer together share the latest rates.
	consoleRateWindow = time.Second
)

// console serves the status page at / and its read-only JSON API under
// /api/: rules with their counters and rates, devices (paged and
// searchable), the MQTT link and the recent errors. It shows no secret:
// no key, password or credential is read by it.
type console struct {
	b   *Bridge
	now func() time.Time

	mu       sync.Mutex
	sampleAt time.Time
	sample   map[string]ruleCounts
	rates    map[string]ruleRates
	// names are the known devices, sorted, for namesSet with
	// namesLearned devices learned.
	names        []string
	namesSet     *rules.Set
	namesLearned int
}

// ruleCounts are a rule's counters.
type ruleCounts struct {
	messages, filtered, errors, buffered float64
}

// ruleRates are a rule's counters per second over the latest window.
type ruleRates struct {
	messages, filtered, errors float64
}

func newConsole(b *Bridge) *console {
	return &console{b: b, now: time.Now}
}

// register mounts the page, its assets and the API on mux: GET only.
func (c *console) register(mux *http.ServeMux) {
	static, _ := fs.Sub(consoleAssets, "console")
	files := http.FileServerFS(static)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		consoleHeaders(w)
		http.ServeFileFS(w, r, static, "index.html")
	})
	mux.Handle("GET /console/", http.StripPrefix("/console/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		consoleHeaders(w)
		files.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /api/status", c.serveStatus)
	mux.HandleFunc("GET /api/devices", c.serveDevices)
	mux.HandleFunc("GET /api/errors", c.serveErrors)
}

// consoleHeaders forbid the page anything but its own scripts, styles and
// API: a device-controlled string that slipped into markup still could
// not run.
func consoleHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

func writeJSON(w http.ResponseWriter, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	json.NewEncoder(w).Encode(v)
}

// ConsoleStatus is the body of GET /api/status.
type ConsoleStatus struct {
	Time    time.Time     `json:"time"`
	Rules   []ConsoleRule `json:"rules"`
	Devices DeviceCounts  `json:"devices"`
	MQTT    ConsoleMQTT   `json:"mqtt"`
	// Observations is the number of observations the bridge holds.
	Observations int `json:"observations"`
	// QueuedCommands is the number of commands waiting for offline
	// devices.
	QueuedCommands int `json:"queued_commands"`
	// ErrorsTotal counts every error recorded since the start; Errors
	// are the newest few, newest first.
	ErrorsTotal uint64        `json:"errors_total"`
	Errors      []RecentError `json:"errors"`
	// Cluster describes the bridge's cluster ([cluster] name); left out
	// for a bridge that runs alone.
	Cluster *ConsoleCluster `json:"cluster,omitempty"`
	// Reload is the outcome of the latest rule reload; left out before
	// the first.
	Reload *ConsoleReload `json:"reload,omitempty"`
}

// ConsoleReload is the outcome of a rule reload. A reload that is not
// "ok" applied nothing: the rules running are those loaded before.
type ConsoleReload struct {
	Time time.Time `json:"time"`
	// Result is "ok", "error" or "refused", as bridge_reloads_total counts it.
	Result string `json:"result"`
	// Errors are why it failed, each rule file problem as file:line: message
	// (at most maxReloadErrors).
	Errors []string `json:"errors,omitempty"`
}

// ConsoleCluster is the cluster membership as this bridge sees it.
type ConsoleCluster struct {
	Name     string `json:"name"`
	Instance string `json:"instance"`
	// Joined: the broker echoed this member's own "online", so it owns
	// devices; Members are the live members then, sorted.
	Joined       bool     `json:"joined"`
	Members      []string `json:"members"`
	OwnedDevices int      `json:"owned_devices"`
}

// ConsoleRule is one rule's counters, rates and latest error.
type ConsoleRule struct {
	Name     string  `json:"name"`
	Kind     string  `json:"kind"`
	Messages float64 `json:"messages"`
	Filtered float64 `json:"filtered"`
	Errors   float64 `json:"errors"`
	Buffered float64 `json:"buffered"`
	// Rates are per second over the latest window (at least a second).
	MessageRate float64      `json:"message_rate"`
	FilterRate  float64      `json:"filter_rate"`
	ErrorRate   float64      `json:"error_rate"`
	LastError   *RecentError `json:"last_error,omitempty"`
}

// DeviceCounts counts the devices the bridge knows by presence state.
type DeviceCounts struct {
	Total   int `json:"total"`
	Learned int `json:"learned"`
	Listed  int `json:"listed"`
	// Presence is false without devices.presence_topic: states are not
	// tracked then.
	Presence bool `json:"presence"`
	Online   int  `json:"online"`
	Asleep   int  `json:"asleep"`
	Offline  int  `json:"offline"`
}

// ConsoleMQTT is the state of the MQTT link.
type ConsoleMQTT struct {
	// Broker is "embedded" or the broker's URL without user and password.
	Broker    string `json:"broker"`
	State     string `json:"state"`
	Connected bool   `json:"connected"`
	// BufferDepth is the messages waiting in the offline buffer, of
	// BufferSize.
	BufferDepth int    `json:"buffer_depth"`
	BufferSize  int    `json:"buffer_size"`
	Published   uint64 `json:"published"`
	Buffered    uint64 `json:"buffered"`
	Refused     uint64 `json:"refused"`
	DroppedQoS0 uint64 `json:"dropped_qos0"`
	Received    uint64 `json:"received"`
	Reconnects  uint64 `json:"reconnects"`
}

func (c *console) serveStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, c.status())
}

// status gathers the status document.
func (c *console) status() ConsoleStatus {
	b := c.b
	set := b.set.Load()
	recent, total := b.metrics.recent.list(consoleErrorsShown)
	if recent == nil {
		recent = []RecentError{}
	}
	st := ConsoleStatus{Time: c.now().UTC(), ErrorsTotal: total, Errors: recent, Rules: []ConsoleRule{}}
	counts := c.ruleCounts()
	rates := c.ratesFor(counts)
	refs := set.Rules()
	names := make([]string, len(refs))
	for i, r := range refs {
		names[i] = r.Name
	}
	last := b.metrics.recent.latestPer(names)
	for _, r := range refs {
		n, rt := counts[r.Name], rates[r.Name]
		cr := ConsoleRule{Name: r.Name, Kind: string(r.Kind),
			Messages: n.messages, Filtered: n.filtered, Errors: n.errors, Buffered: n.buffered,
			MessageRate: rt.messages, FilterRate: rt.filtered, ErrorRate: rt.errors}
		if e, ok := last[r.Name]; ok {
			cr.LastError = &e
		}
		st.Rules = append(st.Rules, cr)
	}
	st.Devices = c.deviceCounts(set)
	st.MQTT = c.mqttStatus()
	if cl := b.cluster; cl != nil {
		members := cl.live()
		st.Cluster = &ConsoleCluster{Name: cl.cfg.Name, Instance: cl.cfg.Instance, Joined: members != nil,
			Members: append([]string{}, members...), OwnedDevices: b.watches.ownedDevices()}
	}
	b.watches.mu.Lock()
	st.Observations = b.watches.active
	b.watches.mu.Unlock()
	b.commands.mu.Lock()
	st.QueuedCommands = b.commands.depth
	b.commands.mu.Unlock()
	st.Reload = b.lastReload.Load()
	return st
}

// ruleCounts reads the per-rule counters.
func (c *console) ruleCounts() map[string]ruleCounts {
	out := map[string]ruleCounts{}
	m := c.b.metrics
	add := func(v prometheus.Collector, f func(*ruleCounts, float64)) {
		ch := make(chan prometheus.Metric, 64)
		go func() { v.Collect(ch); close(ch) }()
		var d dto.Metric
		for pm := range ch {
			d.Reset()
			if pm.Write(&d) != nil || d.Counter == nil {
				continue
			}
			for _, l := range d.Label {
				if l.GetName() == "rule" {
					n := out[l.GetValue()]
					f(&n, d.Counter.GetValue())
					out[l.GetValue()] = n
				}
			}
		}
	}
	add(m.messages, func(n *ruleCounts, v float64) { n.messages += v })
	add(m.filtered, func(n *ruleCounts, v float64) { n.filtered += v })
	add(m.errors, func(n *ruleCounts, v float64) { n.errors += v })
	add(m.buffered, func(n *ruleCounts, v float64) { n.buffered += v })
	return out
}

// ratesFor returns the rates over the latest window, starting a new
// window once the current one is consoleRateWindow old.
func (c *console) ratesFor(counts map[string]ruleCounts) map[string]ruleRates {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.sample == nil:
		c.sample, c.sampleAt = counts, now
	case now.Sub(c.sampleAt) >= consoleRateWindow:
		dt := now.Sub(c.sampleAt).Seconds()
		rates := make(map[string]ruleRates, len(counts))
		for name, n := range counts {
			p := c.sample[name]
			rates[name] = ruleRates{
				messages: perSecond(n.messages-p.messages, dt),
				filtered: perSecond(n.filtered-p.filtered, dt),
				errors:   perSecond(n.errors-p.errors, dt),
			}
		}
		c.rates, c.sample, c.sampleAt = rates, counts, now
	}
	return c.rates
}

// perSecond is delta over dt seconds, rounded to thousandths (a counter
// that went down, after a rule was removed and added again, gives 0).
func perSecond(delta, dt float64) float64 {
	return math.Round(max(delta, 0)/dt*1000) / 1000
}

// mqttStatus describes the MQTT link.
func (c *console) mqttStatus() ConsoleMQTT {
	cfg := c.b.cfg.MQTT
	out := ConsoleMQTT{Broker: redactURL(cfg.Broker), State: "not started", BufferSize: cfg.BufferSize}
	if out.BufferSize == 0 {
		out.BufferSize = mqttside.DefaultBufferSize
	}
	if cfg.Broker == "embedded" {
		out.BufferSize = 0 // in process: nothing is buffered
	}
	cl := c.b.mqtt.client()
	if cl == nil {
		return out
	}
	s := cl.Stats()
	out.State = cl.State().String()
	out.Connected = s.Connected
	out.BufferDepth = s.BufferDepth
	out.Published, out.Buffered, out.Refused, out.DroppedQoS0 = s.Published, s.Buffered, s.Refused, s.DroppedQoS0
	out.Received, out.Reconnects = s.Received, s.Reconnects
	return out
}

// redactURL drops the user and password from a broker URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		if i := strings.LastIndexByte(s, '@'); i >= 0 {
			return s[i+1:] // unparsable, but credentials are before an @
		}
		return s
	}
	u.User = nil
	return u.String()
}

// deviceNames lists the devices the bridge knows, learned and listed,
// sorted by name. The list is kept until the rules change or a device is
// learned (the registry only grows), so paging a fleet does not sort it
// again for every request. The caller must not modify it.
func (c *console) deviceNames(set *rules.Set) []string {
	learned := c.b.learned.len()
	c.mu.Lock()
	if c.names != nil && c.namesSet == set && c.namesLearned == learned {
		names := c.names
		c.mu.Unlock()
		return names
	}
	c.mu.Unlock()
	names := c.b.learned.names()
	for _, d := range set.Devices {
		if _, ok := c.b.learned.lookup(d.Name); !ok {
			names = append(names, d.Name)
		}
	}
	slices.Sort(names)
	names = slices.Clip(names)
	c.mu.Lock()
	c.names, c.namesSet, c.namesLearned = names, set, learned
	c.mu.Unlock()
	return names
}

// deviceCounts counts the known devices by state.
func (c *console) deviceCounts(set *rules.Set) DeviceCounts {
	n := DeviceCounts{Learned: c.b.learned.len(), Listed: len(set.Devices), Presence: c.b.presence != nil}
	n.Total = len(c.deviceNames(set))
	n.Online, n.Asleep, n.Offline = c.b.presence.counts()
	return n
}

// ConsoleDevice is one device in /api/devices.
type ConsoleDevice struct {
	Name string `json:"name"`
	// State is online, asleep or offline; empty when presence is not
	// tracked or the device gave no sign of life yet.
	State string `json:"state,omitempty"`
	// Reason says why a device is offline.
	Reason  string `json:"reason,omitempty"`
	Address string `json:"address,omitempty"`
	Via     string `json:"via,omitempty"`
	Learned bool   `json:"learned"`
	// LastSeen is the latest sign of life: its latest request to the
	// bridge, or its latest answer.
	LastSeen       *time.Time         `json:"last_seen,omitempty"`
	Observations   *ObservationHealth `json:"observations,omitempty"`
	QueuedCommands int                `json:"queued_commands"`
	// Queueing: the device stopped answering and commands wait for it.
	Queueing bool `json:"queueing,omitempty"`
}

// ConsoleDevices is the body of GET /api/devices.
type ConsoleDevices struct {
	// Total is the number of devices matching q and state.
	Total   int             `json:"total"`
	Offset  int             `json:"offset"`
	Limit   int             `json:"limit"`
	Devices []ConsoleDevice `json:"devices"`
}

// serveDevices answers GET /api/devices?offset=&limit=&q=&state=: the
// devices whose name contains q (case-insensitive) in state (online,
// asleep, offline, unknown), sorted by name, limit (at most
// consoleMaxLimit) from offset.
func (c *console) serveDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	offset, err1 := queryInt(q.Get("offset"), 0)
	limit, err2 := queryInt(q.Get("limit"), consoleDefaultLimit)
	state := q.Get("state")
	switch {
	case err1 != nil || err2 != nil || offset < 0 || limit < 1:
		http.Error(w, "offset and limit must be non-negative integers (limit at least 1)", http.StatusBadRequest)
		return
	case state != "" && state != "online" && state != "asleep" && state != "offline" && state != "unknown":
		http.Error(w, "state must be online, asleep, offline or unknown", http.StatusBadRequest)
		return
	}
	writeJSON(w, c.devices(offset, min(limit, consoleMaxLimit), q.Get("q"), state))
}

func queryInt(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	return strconv.Atoi(s)
}

// devices returns one page of the known devices.
func (c *console) devices(offset, limit int, q, state string) ConsoleDevices {
	b := c.b
	set := b.set.Load()
	names := c.deviceNames(set)
	if q != "" {
		q = strings.ToLower(q)
		var kept []string // names is shared: filtered into a new slice
		for _, n := range names {
			if containsFold(n, q) {
				kept = append(kept, n)
			}
		}
		names = kept
	}
	var views []presenceView // of names, once filtered by state
	if state != "" {
		all := make([]presenceView, len(names))
		b.presence.view(names, func(i int, v presenceView) { all[i] = v })
		var kept []string
		for i, n := range names {
			if all[i].stateName() == state {
				kept, views = append(kept, n), append(views, all[i])
			}
		}
		names = kept
	}
	out := ConsoleDevices{Total: len(names), Offset: offset, Limit: limit, Devices: []ConsoleDevice{}}
	if offset >= len(names) {
		return out
	}
	end := min(offset+limit, len(names))
	page := names[offset:end]
	if views != nil {
		views = views[offset:end]
	} else {
		views = make([]presenceView, len(page))
		b.presence.view(page, func(i int, v presenceView) { views[i] = v })
	}
	for i, name := range page {
		out.Devices = append(out.Devices, c.device(set, name, views[i]))
	}
	return out
}

// containsFold reports whether s contains lower (lower case) ignoring
// case, without allocating for ASCII names.
func containsFold(s, lower string) bool {
	for i := 0; i+len(lower) <= len(s); i++ {
		j := 0
		for ; j < len(lower); j++ {
			ch := s[i+j]
			if 'A' <= ch && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			if ch != lower[j] {
				break
			}
		}
		if j == len(lower) {
			return true
		}
	}
	return false
}

// stateName is the state's name in the API; "unknown" when presence is
// not known.
func (v presenceView) stateName() string {
	if v.state == presenceNone {
		return "unknown"
	}
	return v.state.String()
}

// device describes one device.
func (c *console) device(set *rules.Set, name string, v presenceView) ConsoleDevice {
	b := c.b
	d := ConsoleDevice{Name: name, Reason: v.reason}
	if v.state != presenceNone {
		d.State = v.state.String()
	}
	seen := v.seen
	// A [[device]] with a url is reached there, even when a reload gave
	// the url to a name learned before.
	if ld, ok := set.Device(name); ok && ld.Host != "" {
		d.Address, d.Via = ld.Host, ViaUDP.String()
		if ld.Secure {
			d.Via = ViaDTLS.String()
		}
		if l, ok := b.learned.lookup(name); ok {
			seen = max(seen, l.LastSeen.UnixNano())
		}
	} else if l, ok := b.learned.lookup(name); ok {
		d.Learned = true
		d.Address, d.Via = l.Addr.String(), l.Via.String()
		seen = max(seen, l.LastSeen.UnixNano())
	}
	if seen > 0 {
		t := time.Unix(0, seen).UTC()
		d.LastSeen = &t
	}
	if h, ok := b.watches.observationHealth(name); ok {
		d.Observations = &h
	}
	d.QueuedCommands, d.Queueing = b.commands.queued(name)
	return d
}

// serveErrors answers GET /api/errors?limit=: the recent errors, newest
// first.
func (c *console) serveErrors(w http.ResponseWriter, r *http.Request) {
	limit, err := queryInt(r.URL.Query().Get("limit"), recentErrorsSize)
	if err != nil || limit < 1 {
		http.Error(w, "limit must be a positive integer", http.StatusBadRequest)
		return
	}
	list, total := c.b.metrics.recent.list(limit)
	if list == nil {
		list = []RecentError{}
	}
	writeJSON(w, struct {
		Total  uint64        `json:"total"`
		Errors []RecentError `json:"errors"`
	}{total, list})
}
