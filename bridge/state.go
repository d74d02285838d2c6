package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
)

// What state.dir holds.
const (
	// stateFileName is the one file in state.dir, replaced whole on
	// every save (written to a temporary file, synced, renamed).
	stateFileName = "bridge-state.json"
	// stateVersion is the file's format.
	stateVersion = 1
	// stateSaveEvery spaces the saves of a state that keeps changing.
	stateSaveEvery = time.Second
	// maxStateFile bounds the file read at start: the registry and the
	// queues are bounded (devices.max_learned, devices.queue_size), so a
	// larger file is not the bridge's.
	maxStateFile = 512 << 20
)

// savedState is the state file: devices learned over UDP (a DTLS session
// does not survive a restart: such a device is learned again when it next
// speaks) and the commands waiting in device queues, in queue order.
type savedState struct {
	Version  int            `json:"version"`
	Saved    time.Time      `json:"saved"`
	Devices  []savedDevice  `json:"devices"`
	Commands []savedCommand `json:"commands"`
}

type savedDevice struct {
	Name          string    `json:"name"`
	Addr          string    `json:"addr"`
	Authenticated bool      `json:"authenticated,omitempty"`
	LastSeen      time.Time `json:"last_seen"`
}

// savedCommand is a queued command: the MQTT message as it came, matched
// to its rule again at start.
type savedCommand struct {
	Topic           string    `json:"topic"`
	Payload         []byte    `json:"payload,omitempty"`
	QoS             byte      `json:"qos"`
	ResponseTopic   string    `json:"response_topic,omitempty"`
	CorrelationData []byte    `json:"correlation_data,omitempty"`
	ContentType     string    `json:"content_type,omitempty"`
	Received        time.Time `json:"received"`
	Expires         time.Time `json:"expires"`
}

// checkStateDir reports why dir cannot hold the state: missing, not a
// directory, or not writable.
func checkStateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".bridge-check-*")
	if err != nil {
		return fmt.Errorf("not writable: %w", err)
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

// stateKeeper keeps the learned devices and queued commands in state.dir:
// it restores them at start, saves them when they change (at most once
// per stateSaveEvery) and once more at shutdown, after the queues have
// been handed over. A command announced queued asks for a save at once
// (request) and is acknowledged only once a save holding it completed
// (group commit: requests made while a save runs share the next one).
// Without state.dir it does nothing.
type stateKeeper struct {
	path string // "" when state.dir is not set
	log  *slog.Logger
	snap func() savedState

	changed chan struct{} // buffer 1: something to save within stateSaveEvery
	now     chan struct{} // buffer 1: a request waits for a save
	stop    chan struct{}
	saveMu  sync.Mutex // one save at a time
	flog    failureLog // saveMu held

	mu      sync.Mutex
	stopped bool
	running bool       // Run saves the requests
	next    *saveBatch // the requests waiting for the next save
}

// saveBatch is the requests one save serves: done is closed once it
// completed, err is its outcome.
type saveBatch struct {
	done chan struct{}
	err  error
}

func newStateKeeper(dir string, log *slog.Logger) *stateKeeper {
	k := &stateKeeper{log: log, flog: failureLog{log: log}, changed: make(chan struct{}, 1), now: make(chan struct{}, 1), stop: make(chan struct{})}
	if dir != "" {
		k.path = filepath.Join(dir, stateFileName)
	}
	return k
}

// enabled reports whether state.dir is set.
func (k *stateKeeper) enabled() bool { return k != nil && k.path != "" }

// touch notes a change to save.
func (k *stateKeeper) touch() {
	if !k.enabled() {
		return
	}
	select {
	case k.changed <- struct{}{}:
	default:
	}
}

// request asks for a save now and returns the batch of the first save
// whose snapshot is taken after the call: what is in memory now is in
// the file once the batch is done without error. It does not block and
// may be called with commands.mu held; see wait.
func (k *stateKeeper) request() *saveBatch {
	k.mu.Lock()
	if k.next == nil {
		k.next = &saveBatch{done: make(chan struct{})}
	}
	b := k.next
	k.mu.Unlock()
	select {
	case k.now <- struct{}{}:
	default:
	}
	return b
}

// wait returns the outcome of b's save. When Run does not save (not
// started yet, or stopped) the caller saves itself.
func (k *stateKeeper) wait(b *saveBatch) error {
	k.mu.Lock()
	running := k.running
	k.mu.Unlock()
	if !running {
		k.save()
	}
	<-b.done
	return b.err
}

// Run saves the state after each change, at most once per
// stateSaveEvery, and at once when a request waits, until Shutdown.
func (k *stateKeeper) Run(ctx context.Context) error {
	if !k.enabled() {
		select {
		case <-ctx.Done():
		case <-k.stop:
		}
		return nil
	}
	k.mu.Lock()
	k.running = true
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.running = false
		pending := k.next != nil
		k.mu.Unlock()
		if pending { // requests made before running was cleared
			k.save()
		}
	}()
	var (
		timer *time.Timer
		due   <-chan time.Time // a change waits for its turn
		last  time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-k.stop:
			return nil
		case <-k.now:
		case <-k.changed:
			if wait := stateSaveEvery - time.Since(last); wait > 0 {
				if due == nil {
					timer = time.NewTimer(wait)
					due = timer.C
				}
				continue
			}
		case <-due:
		}
		if timer != nil {
			timer.Stop()
			timer, due = nil, nil
		}
		last = time.Now()
		k.save()
	}
}

// Shutdown stops the periodic saves; the final one is the caller's (see
// Bridge.shutdown).
func (k *stateKeeper) Shutdown(context.Context) error {
	k.mu.Lock()
	if !k.stopped {
		k.stopped = true
		close(k.stop)
	}
	k.mu.Unlock()
	return nil
}

// save writes the state now and completes the requests made before its
// snapshot. A failure is returned to those requests and logged (at Warn
// once, then at Debug until a save succeeds); the next change or request
// tries again.
func (k *stateKeeper) save() error {
	if !k.enabled() {
		return nil
	}
	k.saveMu.Lock()
	defer k.saveMu.Unlock()
	k.mu.Lock()
	b := k.next
	k.next = nil
	k.mu.Unlock()
	st := k.snap() // after taking b: it holds what b's requests saw
	err := writeState(k.path, st)
	if b != nil {
		b.err = err
		close(b.done)
	}
	if err != nil {
		k.flog.fail("state not saved", "path", k.path, "err", err)
		return err
	}
	k.flog.ok("state saved again", "path", k.path)
	k.log.Debug("state saved", "path", k.path, "devices", len(st.Devices), "queued_commands", len(st.Commands))
	return nil
}

// writeState replaces the file at path with st: written to a temporary
// file in the same directory, synced, then renamed over it, so a crash
// leaves either the old file or the new one.
func writeState(path string, st savedState) error {
	st.Version, st.Saved = stateVersion, time.Now().UTC()
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".bridge-state-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	// The rename itself, durable.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// readState reads the state file at path; a missing file is an empty
// state.
func readState(path string) (savedState, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return savedState{}, nil
	}
	if err != nil {
		return savedState{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return savedState{}, err
	}
	if len(data) > maxStateFile {
		return savedState{}, fmt.Errorf("%s is larger than %d bytes", path, maxStateFile)
	}
	var st savedState
	if err := json.Unmarshal(data, &st); err != nil {
		return savedState{}, fmt.Errorf("%s: %w", path, err)
	}
	if st.Version != stateVersion {
		return savedState{}, fmt.Errorf("%s: format version %d, want %d", path, st.Version, stateVersion)
	}
	return st, nil
}

// restoreState reads state.dir's file: the learned devices go back into
// the registry at once; the commands are returned, for restoreCommands
// once the MQTT side is up (their results need it). A file that cannot be
// read is logged and set aside (renamed *.bad), and the bridge starts
// without it.
func (b *Bridge) restoreState() []savedCommand {
	k := b.keeper
	if !k.enabled() {
		return nil
	}
	st, err := readState(k.path)
	if err != nil {
		bad := k.path + ".bad"
		_ = os.Rename(k.path, bad)
		b.log.Warn("state not restored: file set aside", "path", bad, "err", err)
		return nil
	}
	n := 0
	for _, d := range st.Devices {
		addr, err := netip.ParseAddrPort(d.Addr)
		if err != nil || rules.CheckSegment(d.Name) != nil {
			continue
		}
		if b.learned.restore(d.Name, addr, d.Authenticated, d.LastSeen) {
			n++
		}
	}
	if n > 0 || len(st.Commands) > 0 {
		b.log.Info("state restored", "path", k.path, "devices", n, "queued_commands", len(st.Commands))
	}
	return st.Commands
}

// snapshot is what the state file holds now: the devices learned over
// UDP and the commands that wait in device queues (or that Shutdown kept).
func (b *Bridge) snapshot() savedState {
	// Commands read at start but not queued again yet (a command queued
	// meanwhile asked for a save, or Run stopped before the MQTT side
	// came up) are kept as they were; restoreMu makes their move to the
	// queues one step.
	b.restoreMu.Lock()
	defer b.restoreMu.Unlock()
	cmds := append(b.commands.saved(), b.restored...)
	return savedState{Devices: b.learned.saved(), Commands: cmds}
}

// restore puts a device back into the registry as saved: it is reached
// from the bridge's UDP socket (see deviceClients.serverEndpoint) until
// it speaks again. false when the registry is full or already knows it.
func (l *learnedDevices) restore(name string, addr netip.AddrPort, auth bool, seen time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.devices[name]; ok || len(l.devices) >= l.max {
		return false
	}
	l.devices[name] = &learnedEntry{addr: addr, seen: seen.UnixNano(), via: ViaUDP, auth: auth}
	return true
}

// saved lists the devices learned over UDP, for the state file.
func (l *learnedDevices) saved() []savedDevice {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]savedDevice, 0, len(l.devices))
	for name, e := range l.devices {
		if e.via != ViaUDP {
			continue
		}
		out = append(out, savedDevice{Name: name, Addr: e.addr.String(), Authenticated: e.auth, LastSeen: time.Unix(0, e.seen).UTC()})
	}
	return out
}

// saved lists the commands announced queued, device by device in queue
// order, for the state file; after Shutdown, those it kept.
func (c *commands) saved() []savedCommand {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []savedCommand
	add := func(cmd *command) {
		if cmd.announced == nil {
			return // never acknowledged: the broker still has it, or its sender was answered
		}
		d := cmd.delivery
		out = append(out, savedCommand{Topic: d.Topic, Payload: d.Payload, QoS: d.QoS, ResponseTopic: d.ResponseTopic,
			CorrelationData: d.CorrelationData, ContentType: d.ContentType, Received: cmd.received, Expires: cmd.expires})
	}
	for _, dq := range c.queue {
		for _, cmd := range dq.cmds {
			add(cmd)
		}
	}
	for _, cmd := range c.kept {
		add(cmd)
	}
	return out
}

// restoreCommands queues the saved commands again, in their order: each
// is matched to its command rule and device anew. They were announced
// queued before the restart, so they are not announced again; one whose
// rule is gone is dropped, logged and counted.
func (c *commands) restoreCommands(saved []savedCommand) {
	type failure struct {
		cmd *command
		err error
	}
	var failed []failure
	defer func() {
		if c.restored != nil {
			close(c.restored)
		}
		// Published once deliveries go on: a result may be delivered
		// back to the bridge on the publishing goroutine.
		for _, f := range failed {
			c.finish(f.cmd, commandResult{Status: "error", Error: fmt.Sprintf("saved command: %v", f.err)}, reasonUnknownDevice)
		}
	}()
	set := c.set.Load()
	for _, s := range saved {
		d := &mqttside.Delivery{Message: mqttside.Message{Topic: s.Topic, Payload: s.Payload, QoS: s.QoS,
			ResponseTopic: s.ResponseTopic, CorrelationData: s.CorrelationData, ContentType: s.ContentType}, Received: s.Received}
		rule, caps, ok := set.MatchCommand(s.Topic, nil)
		if !ok {
			c.metrics.ruleError("", reasonNoRoute, errorDetail{errText: "saved command for " + s.Topic + ": no rule matches"})
			c.log.Warn("saved command dropped: no rule matches", "topic", s.Topic)
			continue
		}
		cmd := &command{rule: rule, caps: caps, delivery: d, received: s.Received, expires: s.Expires,
			announced: make(chan struct{})}
		close(cmd.announced)
		target, err := set.Target(rule, caps)
		name := deviceName(target)
		if err != nil || name == "" {
			failed = append(failed, failure{cmd, err})
			continue
		}
		cmd.target = target
		if !target.Learned {
			// A device at its url is pinged until it answers, as after
			// a timeout.
			c.markOffline(name, false)
		}
		c.mu.Lock()
		dq, ok := c.queue[name]
		if !ok {
			dq = &deviceQueue{sleepy: true}
			c.queue[name] = dq
		}
		dq.cmds = append(dq.cmds, cmd)
		c.depth++
		c.metrics.queueDepth.Set(float64(c.depth))
		c.scheduleExpiry(cmd.expires)
		c.mu.Unlock()
	}
}

// serverUDPEndpoint is the bridge's UDP CoAP socket: a device restored
// from the state file is reached from it, the socket it spoke to before
// the restart (the same address when coap.listen names a port).
func (b *Bridge) serverUDPEndpoint() *coapside.Endpoint {
	b.mu.Lock()
	addr := b.coapAddr
	b.mu.Unlock()
	if addr == nil {
		return nil
	}
	for _, ep := range b.coap.srv.Endpoints() {
		if a, ok := ep.LocalAddr().(*net.UDPAddr); ok && a.String() == addr.String() {
			return ep
		}
	}
	return nil
}
