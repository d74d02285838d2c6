package bridge

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// probeTimeout bounds one CoAP ping to an offline device: long enough for
// a retransmission or two of the ping (RFC 7252 §4.2) on a slow link.
const probeTimeout = 10 * time.Second

// deviceQueue holds the commands of one device, in the order they came.
//
// Two kinds of device have a queue:
//
//   - A learned device (reached where it last spoke from) always sends its
//     commands through its queue, one at a time (RFC 7252 §4.7: one
//     outstanding interaction per peer), while it is awake: for
//     Options.Awake after each of its requests to the bridge (queue mode,
//     as LwM2M calls it). A command for a device that is asleep waits for
//     its next uplink; the drain stops when the awake window closes.
//   - A device at its url that stopped answering is marked offline: its
//     commands wait while a probe goroutine pings it with backoff.
//
// When the device is seen again (an uplink, a ping answer, a notification,
// a poll answer, a command answered) the queue switches to draining: one
// goroutine sends the waiting commands in order, and commands that arrive
// meanwhile join the end of the queue, so none overtakes an older one. An
// empty drained queue is removed; a timeout while draining makes the
// device offline (or asleep) again.
//
// A command that has to wait for the device is announced with a queued
// result and acknowledged to the broker; it then ends ok, error, timeout or
// expired (its TTL passed in the queue, see expireLoop).
type deviceQueue struct {
	cmds []*command
	// sleepy: a learned device in queue mode, drained while awake and
	// never probed.
	sleepy bool
	// draining: the device is awake or seen again and its commands are
	// being sent.
	draining bool
	// drainer: a drain goroutine runs (it may not have noticed yet that
	// the device went offline again).
	drainer bool
	// stopProbe ends the probe goroutine; nil while draining and for a
	// sleepy device.
	stopProbe context.CancelFunc
}

// offline reports whether commands for a device must wait in its queue:
// it is offline or asleep, or its queue is being drained.
func (c *commands) offline(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.queue[name]
	return ok
}

// awake reports whether learned device name spoke to the bridge within
// the awake window before now.
func (c *commands) awake(name string, now time.Time) bool {
	if c.devices == nil || c.devices.learned == nil {
		return false
	}
	ld, ok := c.devices.learned.lookup(name)
	return ok && now.Sub(ld.LastSeen) < c.opts.Awake
}

// known reports whether learned device name has spoken to the bridge.
func (c *commands) known(name string) bool {
	if c.devices == nil || c.devices.learned == nil {
		return false
	}
	_, ok := c.devices.learned.lookup(name)
	return ok
}

// markOffline starts queueing commands for a device that did not answer.
// A device at its url is probed; a learned one (sleepy) waits for its next
// uplink. While its queue drains, the drain stops.
func (c *commands) markOffline(name string, sleepy bool) {
	c.mu.Lock()
	dq, ok := c.queue[name]
	switch {
	case ok && !dq.draining:
		c.mu.Unlock()
		return // already offline and probed, or asleep
	case !ok:
		dq = &deviceQueue{sleepy: sleepy}
		c.queue[name] = dq
		if sleepy {
			c.log.Info("device not answering: its commands wait for its next uplink", "device", name)
		} else {
			c.log.Info("device offline: queueing its commands", "device", name)
		}
	default:
		dq.draining = false
		c.log.Info("device offline again: queueing its commands", "device", name, "queued_commands", len(dq.cmds))
	}
	announce := c.announceLocked(c.unannounced(dq))
	if !dq.sleepy && !c.closed {
		ctx, cancel := context.WithCancel(c.ctx)
		dq.stopProbe = cancel
		c.wg.Add(1)
		go c.probe(ctx, name)
	}
	c.mu.Unlock()
	c.announce(announce)
}

// markOnline ends the wait for a device: its queued commands are sent, in
// order, by a drain goroutine.
func (c *commands) markOnline(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dq, ok := c.queue[name]
	if !ok || dq.draining {
		return
	}
	if dq.stopProbe != nil {
		dq.stopProbe()
		dq.stopProbe = nil
	}
	c.log.Debug("device seen: sending its queued commands", "device", name, "queued_commands", len(dq.cmds))
	dq.draining = true
	c.startDrain(name, dq)
}

// startDrain starts a drain goroutine for a draining queue unless one
// runs; an empty queue is removed. c.mu is held.
func (c *commands) startDrain(name string, dq *deviceQueue) {
	switch {
	case dq.drainer:
		// The drain goroutine still runs and carries on.
	case len(dq.cmds) == 0:
		delete(c.queue, name)
	case !c.closed: // once closed, Shutdown answers the queue
		dq.drainer = true
		c.wg.Add(1)
		go c.drain(name)
	}
}

// drain sends a device's queued commands one after the other until the
// queue is empty, the device stops answering again or falls asleep, or the
// bridge stops.
func (c *commands) drain(name string) {
	defer c.wg.Done()
	for {
		now := time.Now()
		c.mu.Lock()
		dq, ok := c.queue[name]
		switch {
		case !ok: // taken by Shutdown
			c.mu.Unlock()
			return
		case !dq.draining || c.ctx.Err() != nil:
			// Offline again (the probe is back in charge), or closing
			// (Shutdown answers what is left).
			dq.drainer = false
			c.mu.Unlock()
			return
		case len(dq.cmds) == 0:
			delete(c.queue, name)
			c.mu.Unlock()
			return
		case dq.sleepy && !c.awake(name, now):
			// The awake window closed: what is left waits for the next
			// uplink. Checked under c.mu, which markOnline takes after
			// the uplink is recorded, so no uplink is missed.
			dq.draining, dq.drainer = false, false
			n := len(dq.cmds)
			announce := c.announceLocked(c.unannounced(dq))
			c.mu.Unlock()
			c.log.Debug("device asleep: its commands wait for its next uplink", "device", name, "queued_commands", n)
			c.announce(announce)
			return
		}
		cmd := dq.cmds[0]
		dq.cmds[0] = nil
		dq.cmds = dq.cmds[1:]
		c.depth--
		c.metrics.queueDepth.Set(float64(c.depth))
		c.mu.Unlock()
		if now.After(cmd.expires) { // before the janitor saw it
			c.finish(cmd, commandResult{Status: "expired", Error: expiredError(cmd)}, reasonExpired)
			continue
		}
		c.execute(cmd)
	}
}

// admit puts a command for a learned device in its queue (see
// deviceQueue) and reports true; it reports false for any other command,
// which goes to the workers. A device that is asleep gets a queue that
// waits for its next uplink; an awake one starts draining at once.
func (c *commands) admit(cmd *command) bool {
	name := deviceName(cmd.target)
	if name == "" || !cmd.target.Learned || !c.known(name) {
		// A device that never spoke is refused by execute, at once.
		return false
	}
	c.mu.Lock()
	dq, ok := c.queue[name]
	if !ok {
		dq = &deviceQueue{sleepy: true}
		dq.draining = c.awake(name, time.Now())
		c.queue[name] = dq
	}
	c.enqueueLocked(name, dq, cmd)
	return true
}

// requeue puts cmd, which the device certainly did not get (its port is
// unreachable), back at the head of the device's queue, the device now
// offline (probed) or asleep (a learned device, until its next uplink).
// It reports false when cmd cannot wait: the bridge is closing, the
// queue is full, or its time in a queue is over; the caller then ends it.
func (c *commands) requeue(name string, cmd *command) bool {
	if time.Now().After(cmd.expires) {
		return false
	}
	c.markOffline(name, cmd.target.Learned)
	c.mu.Lock()
	dq, ok := c.queue[name]
	if !ok || c.closed || len(dq.cmds) >= c.opts.CommandQueue {
		c.mu.Unlock()
		return false
	}
	dq.cmds = slices.Insert(dq.cmds, 0, cmd)
	c.depth++
	c.metrics.queueDepth.Set(float64(c.depth))
	c.scheduleExpiry(cmd.expires)
	var announce []queuedCommand
	switch {
	case dq.draining: // seen again meanwhile: it goes first
		c.startDrain(name, dq)
	case cmd.announced == nil:
		cmd.announce()
		announce = c.announceLocked([]queuedCommand{{cmd, 1}})
	}
	c.mu.Unlock()
	c.log.Debug("command not delivered, the device's port is unreachable: back in its queue", "device", name, "topic", cmd.delivery.Topic)
	c.announce(announce)
	c.touch()
	return true
}

// enqueue holds a command for a device that is offline or whose queue is
// draining; a full queue refuses it.
func (c *commands) enqueue(name string, cmd *command) {
	c.mu.Lock()
	dq, ok := c.queue[name]
	if !ok { // came online and drained meanwhile
		c.mu.Unlock()
		c.execute(cmd)
		return
	}
	c.enqueueLocked(name, dq, cmd)
}

// enqueueLocked appends cmd to dq, called with c.mu held, which it
// releases. A command the device cannot take now (offline, or asleep even
// while a drain is finishing) is announced as queued.
func (c *commands) enqueueLocked(name string, dq *deviceQueue, cmd *command) {
	if c.closed {
		if len(dq.cmds) == 0 && !dq.drainer && dq.stopProbe == nil {
			delete(c.queue, name)
		}
		c.mu.Unlock()
		c.abandon(cmd, commandResult{Status: "expired", Error: "bridge shutting down"})
		return
	}
	if len(dq.cmds) >= c.opts.CommandQueue { // at least 1 (setDefaults)
		c.mu.Unlock()
		c.finish(cmd, commandResult{Status: "error",
			Error: fmt.Sprintf("device %s and its command queue is full (%d commands)", queueState(dq), c.opts.CommandQueue)}, reasonQueueFull)
		return
	}
	dq.cmds = append(dq.cmds, cmd)
	c.depth++
	c.metrics.queueDepth.Set(float64(c.depth))
	c.scheduleExpiry(cmd.expires)
	var announce []queuedCommand
	if dq.draining {
		c.startDrain(name, dq)
	}
	// A sleepy device whose awake window closed while its queue drains
	// (a command still waits for its answer) takes no more in this
	// window: the drain stops at its next command.
	if !dq.draining || dq.sleepy && !c.awake(name, time.Now()) {
		cmd.announce()
		announce = c.announceLocked([]queuedCommand{{cmd, len(dq.cmds)}})
	}
	c.mu.Unlock()
	c.announce(announce)
}

// queueState says why a device's commands wait, for an error message.
func queueState(dq *deviceQueue) string {
	switch {
	case dq.draining:
		return "busy"
	case dq.sleepy:
		return "asleep"
	}
	return "offline"
}

// queuedCommand is a command to announce as queued, at its position.
type queuedCommand struct {
	cmd      *command
	position int
}

// unannounced marks the commands of dq not yet announced as queued and
// returns them with their positions; c.mu is held.
func (c *commands) unannounced(dq *deviceQueue) []queuedCommand {
	var out []queuedCommand
	for i, cmd := range dq.cmds {
		if cmd.announced == nil {
			cmd.announce()
			out = append(out, queuedCommand{cmd, i + 1})
		}
	}
	return out
}

// announce publishes a queued result for each command, then acknowledges
// it: the bridge now holds the command until the device takes it or it
// expires, and publishes that outcome. Acknowledging now keeps a queue of
// waiting QoS 1 commands from filling the broker's in-flight window, which
// would stop every other delivery to the bridge.
//
// Without state.dir the queue is in memory: a crash loses it. With
// state.dir the commands are announced and acknowledged only once a save
// holding them completed (see announceSaved).
func (c *commands) announce(qs []queuedCommand) {
	if len(qs) == 0 {
		return
	}
	if c.state.enabled() {
		c.announceSaved(announcement{qs: qs, saved: c.state.request()})
		return
	}
	for _, q := range qs {
		cmd := q.cmd
		c.publishResult(cmd, queuedResult(q))
		cmd.delivery.Ack()
		close(cmd.announced)
	}
	c.touch()
}

// queuedResult is the queued result of q.
func queuedResult(q queuedCommand) *commandResult {
	return &commandResult{Status: "queued", Position: q.position,
		ExpiresAt: q.cmd.expires.UTC().Format(time.RFC3339Nano)}
}

// announcement is commands to announce queued once the save that holds
// them completed.
type announcement struct {
	qs    []queuedCommand
	saved *saveBatch
}

// announceLocked hands qs, just marked announced in their queues, to the
// announcer goroutine when state.dir is set, so that the caller (the MQTT
// client's delivery, a worker) does not wait for the save; c.mu is held.
// It returns what the caller announces itself once it released c.mu:
// everything without state.dir, and, once closed, what a worker or drain
// announces before Shutdown takes the queues.
func (c *commands) announceLocked(qs []queuedCommand) []queuedCommand {
	if len(qs) == 0 || !c.state.enabled() || c.closed {
		return qs
	}
	c.pending = append(c.pending, announcement{qs: qs, saved: c.state.request()})
	if !c.announcing {
		c.announcing = true
		c.wg.Add(1)
		go c.announcer()
	}
	return nil
}

// announcer announces the pending commands in the order they were
// queued, each group once its save completed, until none is left.
func (c *commands) announcer() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(c.pending) == 0 {
			c.announcing = false
			c.mu.Unlock()
			return
		}
		a := c.pending[0]
		c.pending[0] = announcement{}
		c.pending = c.pending[1:]
		c.mu.Unlock()
		c.announceSaved(a)
	}
}

// announceSaved waits for the save that holds a's commands (state.dir),
// then announces them. A command still in its queue once the save
// completed is in the file: it is acknowledged. One that left its queue
// before (sent, expired) may not be: its outcome, published by whoever
// took it, acknowledges it.
//
// When the save failed the command is not kept as if it would survive a
// crash: it leaves its queue and gets an error result naming the state
// failure, counted as reason "state". A delivery the broker redelivers
// (QoS 1 from a remote broker) is not acknowledged: the broker keeps it
// and delivers it again after the next reconnect; any other is
// acknowledged with its error result.
func (c *commands) announceSaved(a announcement) {
	err := c.state.wait(a.saved)
	for _, q := range a.qs {
		cmd := q.cmd
		c.mu.Lock()
		held := c.inQueue(cmd)
		if held && err != nil {
			c.unqueue(cmd)
		}
		c.mu.Unlock()
		switch {
		case err == nil:
			c.publishResult(cmd, queuedResult(q))
			if held {
				cmd.delivery.Ack()
			}
			close(cmd.announced)
		case !held:
			close(cmd.announced) // its outcome follows
		default:
			close(cmd.announced)
			c.metrics.ruleError(cmd.rule.Name, reasonState, errorDetail{device: deviceName(cmd.target), err: err})
			c.log.Debug("command not queued: state not saved", "rule", cmd.rule.Name, "topic", cmd.delivery.Topic, "err", err)
			c.publishResult(cmd, &commandResult{Status: "error", Error: fmt.Sprintf("not queued: the bridge could not save its state: %v", err)})
			if !cmd.delivery.Redeliverable() {
				cmd.delivery.Ack()
			}
		}
	}
}

// inQueue reports whether cmd waits in its device's queue; c.mu is held.
func (c *commands) inQueue(cmd *command) bool {
	dq, ok := c.queue[deviceName(cmd.target)]
	return ok && slices.Contains(dq.cmds, cmd)
}

// unqueue takes cmd out of its device's queue; c.mu is held.
func (c *commands) unqueue(cmd *command) {
	name := deviceName(cmd.target)
	dq, ok := c.queue[name]
	if !ok {
		return
	}
	i := slices.Index(dq.cmds, cmd)
	if i < 0 {
		return
	}
	dq.cmds = slices.Delete(dq.cmds, i, i+1)
	c.depth--
	c.metrics.queueDepth.Set(float64(c.depth))
	if len(dq.cmds) == 0 && dq.sleepy && !dq.draining && !dq.drainer {
		delete(c.queue, name) // asleep with nothing left to send
	}
}

// probe pings an offline device soon after it stopped answering, then
// with doubling intervals (see backoff: the n-th wait is between half and
// all of min(ProbeMin·2ⁿ, ProbeMax)), until it answers or ctx ends. A
// device that answers is marked online.
func (c *commands) probe(ctx context.Context, name string) {
	defer c.wg.Done()
	bo := backoff{min: c.opts.ProbeMin, max: max(c.opts.ProbeMax, c.opts.ProbeMin)}
	for sleep(ctx, bo.next()) {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		alive, known := c.devices.pingDevice(pctx, c.set.Load(), name)
		cancel()
		if !known {
			c.forget(name)
			return
		}
		if alive {
			c.presence.answered(name)
			c.markOnline(name)
			return
		}
		c.log.Debug("device still offline", "device", name)
	}
}

// forget drops the queue of a device that a reload removed from the rules;
// its waiting commands are answered with an error.
func (c *commands) forget(name string) {
	c.mu.Lock()
	dq, ok := c.queue[name]
	if !ok || dq.draining {
		c.mu.Unlock()
		return
	}
	delete(c.queue, name)
	c.depth -= len(dq.cmds)
	c.metrics.queueDepth.Set(float64(c.depth))
	c.mu.Unlock()
	for _, cmd := range dq.cmds {
		c.finish(cmd, commandResult{Status: "error", Error: "device removed from the rules"}, reasonUnknownDevice)
	}
}

// scheduleExpiry makes the expiry loop wake by at; c.mu is held.
func (c *commands) scheduleExpiry(at time.Time) {
	if !c.nextExpiry.IsZero() && !at.Before(c.nextExpiry) {
		return
	}
	c.nextExpiry = at
	select {
	case c.expiryWake <- struct{}{}:
	default:
	}
}

// expiryGrain batches expiries: commands due within it of each other are
// answered in one pass over the queues.
const expiryGrain = 50 * time.Millisecond

// expireLoop answers queued commands whose TTL has passed as expired. It
// sleeps until the earliest expiry of a queued command (scheduleExpiry),
// so a command expires on time whether or not its device comes back.
func (c *commands) expireLoop() {
	defer c.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		c.mu.Lock()
		next := c.nextExpiry
		c.mu.Unlock()
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0) + expiryGrain
		}
		t.Reset(wait)
		select {
		case <-c.ctx.Done():
			return
		case <-c.expiryWake:
		case now := <-t.C:
			c.expire(now)
		}
	}
}

// expire answers the queued commands due at now as expired and finds the
// next expiry.
func (c *commands) expire(now time.Time) {
	var expired []*command
	var next time.Time
	c.mu.Lock()
	for _, dq := range c.queue {
		keep := dq.cmds[:0]
		for _, cmd := range dq.cmds {
			if now.After(cmd.expires) {
				expired = append(expired, cmd)
				continue
			}
			keep = append(keep, cmd)
			if next.IsZero() || cmd.expires.Before(next) {
				next = cmd.expires
			}
		}
		clear(dq.cmds[len(keep):])
		dq.cmds = keep
	}
	for name, dq := range c.queue {
		if len(dq.cmds) == 0 && dq.sleepy && !dq.draining && !dq.drainer {
			delete(c.queue, name) // asleep with nothing left to send
		}
	}
	c.nextExpiry = next
	c.depth -= len(expired)
	c.metrics.queueDepth.Set(float64(c.depth))
	c.mu.Unlock()
	for _, cmd := range expired {
		c.finish(cmd, commandResult{Status: "expired", Error: expiredError(cmd)}, reasonExpired)
	}
}

// expiredError says why a command expired in its queue.
func expiredError(cmd *command) string {
	return fmt.Sprintf("not sent within its time to live (%v): the device stayed asleep or offline", cmd.expires.Sub(cmd.received).Round(time.Millisecond))
}

// queued returns how many commands wait for device name, and whether it
// has a queue (it is offline, or its queue drains).
func (c *commands) queued(name string) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dq, ok := c.queue[name]
	if !ok {
		return 0, false
	}
	return len(dq.cmds), true
}
