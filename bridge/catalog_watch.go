package bridge

import (
	"context"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/rules"
)

// catalogRule names the [catalog] section in bridge_rule_errors_total:
// a failed read of a device's /.well-known/core for the catalog.
const catalogRule = "[catalog]"

// catalogLearnedAttempts bounds the reads of a learned device's catalog
// after it was learned or moved: it is awake right after a request, and
// perhaps asleep a few seconds later.
const catalogLearnedAttempts = 3

// catalogDevices lists the devices whose catalog the [catalog] section
// publishes: every listed device with a url, and the learned devices
// (see catalogLearned). It is nil when catalog.topic is empty.
func (b *Bridge) catalogDevices(set *rules.Set, learned []string) []*rules.Device {
	if b.watches.catalogTopic.IsZero() || set == nil {
		return nil
	}
	var out []*rules.Device
	for _, d := range set.Devices {
		if d.Host != "" {
			out = append(out, d)
		}
	}
	for _, name := range learned {
		out = append(out, b.catalogLearned(set, name)...)
	}
	return out
}

// catalogLearned is the device learned as name whose catalog the [catalog]
// section publishes: its [[device]] entry without url, or a device
// reached where it was learned. A listed device with a url is read there,
// not here.
func (b *Bridge) catalogLearned(set *rules.Set, name string) []*rules.Device {
	if b.watches.catalogTopic.IsZero() || set == nil {
		return nil
	}
	d, ok := set.Device(name)
	switch {
	case !ok:
		d = &rules.Device{Name: name}
	case d.Host != "":
		return nil
	}
	return []*rules.Device{d}
}

// addCatalogGroups adds a group reading the catalog of each device to want.
func (wt *watcher) addCatalogGroups(want map[string]*watchGroup, devices []*rules.Device) {
	for _, d := range devices {
		g := &watchGroup{kind: kindCatalog, device: d}
		want[g.key()] = g
	}
}

// readCatalog reads a device's whole /.well-known/core and publishes it
// on catalog.topic. A device with a url is read again every
// DiscoveryRefresh; a device reached where it was learned is read when it
// is learned or moves (the group is started again then), at most
// catalogLearnedAttempts times, so that a sleeping device is not asked
// over and over. A failed read publishes nothing and is counted.
func (wt *watcher) readCatalog(ctx context.Context, run *watchRun) {
	bo := backoff{min: wt.opts.ReobserveMin, max: wt.opts.ReobserveMax}
	flog := failureLog{log: wt.log}
	for attempt := 1; ctx.Err() == nil; attempt++ {
		g := wt.group(run)
		sent := time.Now()
		links, err := wt.wellKnownCore(ctx, g.device)
		learned := g.device.Host == ""
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wt.metrics.ruleError(catalogRule, reasonOf(err), errorDetail{device: g.device.Name, err: err})
			wt.presence.unreachable(g.device.Name, err, sent)
			flog.fail("catalog: discovery failed", "device", g.device.Name, "err", err)
			if learned && attempt >= catalogLearnedAttempts {
				return // read again when the device is heard from where it is
			}
			if !sleep(ctx, bo.next()) {
				return
			}
			continue
		}
		bo.reset()
		flog.ok("catalog: discovery recovered", "device", g.device.Name)
		wt.seen(g.device.Name)
		wt.catalogs.publish(ctx, wt.catalogTopic, g.device.Name, links)
		if learned || !sleep(ctx, wt.opts.DiscoveryRefresh) {
			return
		}
		attempt = 0
	}
}

// wellKnownCore reads every link of a device's /.well-known/core.
func (wt *watcher) wellKnownCore(ctx context.Context, d *rules.Device) ([]linkformat.Link, error) {
	req, err := deviceRequest(d, "")
	if err != nil {
		return nil, err
	}
	var client *coapside.Client
	if client, err = wt.devices.prepare(ctx, d, d.Secure, req); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, wt.opts.RequestTimeout)
	defer cancel()
	return client.DiscoverRequest(ctx, req)
}
