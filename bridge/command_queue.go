package bridge

import (
	"context"
	"time"
)

// probeTimeout bounds one CoAP ping to an offline device: long enough for
// a retransmission or two of the ping (RFC 7252 §4.2) on a slow link.
const probeTimeout = 10 * time.Second

// deviceQueue holds the commands for a device that stopped answering.
//
// A device that times out is marked offline: a queue is created and a
// probe goroutine pings it with backoff. When the device is seen again (a
// ping answer, a push, a notification, a poll answer, a command answered)
// the queue switches to draining: one goroutine sends the waiting commands
// in order, and commands that arrive meanwhile join the end of the queue,
// so none overtakes an older one. An empty drained queue is removed; a
// timeout while draining marks the device offline again.
type deviceQueue struct {
	cmds []*command
	// draining: the device was seen again and its commands are being sent.
	draining bool
	// drainer: a drain goroutine runs (it may not have noticed yet that
	// the device went offline again).
	drainer bool
	// stopProbe ends the probe goroutine; nil while draining.
	stopProbe context.CancelFunc
}

// offline reports whether commands for a device must wait in its queue:
// it is offline, or its queue is being drained.
func (c *commands) offline(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.queue[name]
	return ok
}

// markOffline starts queueing commands for a device and probing it. While
// its queue drains, it stops the drain and probes again.
func (c *commands) markOffline(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dq, ok := c.queue[name]
	switch {
	case ok && !dq.draining:
		return // already offline and probed
	case !ok:
		dq = &deviceQueue{}
		c.queue[name] = dq
		c.log.Info("device offline: queueing its commands", "device", name)
	default:
		dq.draining = false
		c.log.Info("device offline again: queueing its commands", "device", name, "queued_commands", len(dq.cmds))
	}
	if c.closed {
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	dq.stopProbe = cancel
	c.wg.Add(1)
	go c.probe(ctx, name)
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
	c.log.Info("device seen again", "device", name, "queued_commands", len(dq.cmds))
	dq.draining = true
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
// queue is empty, the device stops answering again, or the bridge stops.
func (c *commands) drain(name string) {
	defer c.wg.Done()
	for {
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
		}
		cmd := dq.cmds[0]
		dq.cmds[0] = nil
		dq.cmds = dq.cmds[1:]
		c.depth--
		c.metrics.queueDepth.Set(float64(c.depth))
		c.mu.Unlock()
		c.execute(cmd)
	}
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
	if len(dq.cmds) >= c.opts.CommandQueue {
		c.mu.Unlock()
		c.finish(cmd, commandResult{Status: "error", Error: "device offline and its command queue is full"}, reasonQueueFull)
		return
	}
	dq.cmds = append(dq.cmds, cmd)
	c.depth++
	c.metrics.queueDepth.Set(float64(c.depth))
	c.mu.Unlock()
	// The bridge now holds the command until the device is back or the
	// command expires, and publishes that outcome. Acknowledging now keeps
	// a queue of waiting QoS 1 commands from filling the broker's in-flight
	// window, which would stop every other delivery to the bridge. The
	// queue is in memory: a crash loses it.
	cmd.delivery.Ack()
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

// expireLoop answers queued commands older than CommandQueueTTL as
// expired, checking every second (or every quarter of the TTL if shorter).
func (c *commands) expireLoop() {
	defer c.wg.Done()
	t := time.NewTicker(min(c.opts.CommandQueueTTL/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-t.C:
			var expired []*command
			c.mu.Lock()
			for _, dq := range c.queue {
				keep := dq.cmds[:0]
				for _, cmd := range dq.cmds {
					if now.Sub(cmd.received) > c.opts.CommandQueueTTL {
						expired = append(expired, cmd)
					} else {
						keep = append(keep, cmd)
					}
				}
				clear(dq.cmds[len(keep):])
				dq.cmds = keep
			}
			c.depth -= len(expired)
			c.metrics.queueDepth.Set(float64(c.depth))
			c.mu.Unlock()
			for _, cmd := range expired {
				c.finish(cmd, commandResult{Status: "expired", Error: "device stayed offline"}, reasonExpired)
			}
		}
	}
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
