package bridge

import (
	"github.com/coap-mqtt/bridge/rules"
)

// addWatches starts the watches in ws that are not running yet (a device
// just learned, for rules with devices = ["*"]) and leaves every running
// one as it is. It returns how many groups it started.
func (wt *watcher) addWatches(ws []rules.Watch, catalog []*rules.Device) int {
	if len(ws) == 0 && len(catalog) == 0 {
		return 0
	}
	want := groupWatches(ws)
	wt.addCatalogGroups(want, catalog)
	wt.keepOwned(want)
	wt.mu.Lock()
	defer wt.mu.Unlock()
	if wt.closed {
		return 0
	}
	n := 0
	for k, g := range want {
		if _, ok := wt.running[k]; !ok {
			wt.startLocked(k, g)
			n++
		}
	}
	return n
}

// restartLearned starts again, at once, the running watches of device
// name that reach it where it was learned (it has no url): after it moved,
// an observation registered at its old address must be made at the new
// one, and a watch waiting in backoff for it to be learned can start.
// Watches of devices with a url are left alone. The replaced runs end on
// their own (an observation deregisters at the old address, best effort).
func (wt *watcher) restartLearned(name string) int {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	if wt.closed {
		return 0
	}
	n := 0
	keys := wt.learnedKeys[name]
	for k := range keys {
		run, ok := wt.running[k]
		if !ok || run.g.device.Name != name || run.g.device.Host != "" {
			delete(keys, k) // stopped by a reload since
			continue
		}
		run.cancel()
		wt.startLocked(k, run.g)
		n++
	}
	if len(keys) == 0 {
		delete(wt.learnedKeys, name)
	}
	return n
}

// indexLearnedLocked records that key is a running group of name, a
// device reached where it was learned, so that restartLearned finds it
// without going through every running group.
func (wt *watcher) indexLearnedLocked(name, key string) {
	keys := wt.learnedKeys[name]
	if keys == nil {
		keys = map[string]struct{}{}
		wt.learnedKeys[name] = keys
	}
	keys[key] = struct{}{}
}

// learnedWatches lists the watches a rule set asks for on the devices
// learned so far: set.Watches plus, for rules with devices = ["*"], those
// of every learned device.
func (b *Bridge) learnedWatches(set *rules.Set) []rules.Watch {
	ws := set.Watches()
	if !set.HasLearnedWatches() {
		return ws
	}
	for _, name := range b.learned.names() {
		ws = append(ws, set.LearnedWatches(name)...)
	}
	return ws
}

// onLearn keeps the watches in step with the learned devices: a device
// learned is watched by the rules with devices = ["*"], a device that
// moved (or was just learned) is observed and polled where it is now, and
// a device that woke up is registered with again.
func (b *Bridge) onLearn(ev LearnEvent) {
	switch ev.Kind {
	case Learned, Moved, Seen:
		// An uplink: the device is awake, its queued commands go out.
		b.commands.markOnline(ev.Device.Name)
	}
	if ev.Kind == Seen && ev.Device.LastSeen.Sub(ev.Before) >= b.opts.Awake {
		// Its first uplink after it slept: it may have dropped its
		// observers meanwhile, and listens only for a while now. It fell
		// asleep when the awake window of its previous uplink closed;
		// what it sent inside that window (the answer to a registration
		// that uplink prompted) does not show it kept its observers.
		b.watches.woke(ev.Device.Name, ev.Before.Add(b.opts.Awake))
	}
	switch ev.Kind {
	case Learned, Moved:
	default:
		return
	}
	name := ev.Device.Name
	if b.cluster != nil {
		b.cluster.announce(name)
	}
	restarted := b.watches.restartLearned(name)
	started := 0
	if set := b.set.Load(); set != nil && ev.Kind == Learned {
		ws := set.LearnedWatches(name)
		if b.cluster != nil {
			// A listed device without url is watched only by the
			// members that learned it: its watches start now.
			ws = append(ws, set.Watches()...)
		}
		started = b.watches.addWatches(ws, b.catalogLearned(set, name))
	}
	if restarted+started > 0 {
		b.log.Debug("watches follow the device", "device", name, "address", ev.Device.Addr.String(), "started", started, "restarted", restarted)
	}
}
