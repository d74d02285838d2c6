package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/coap-mqtt/bridge/mqttside"
)

// A device without url is reached where it last spoke from, which only
// the member it spoke to knows. Each member announces the devices it
// learns, retained on "<prefix>learned/<device>" with its instance, and a
// command for a learned device that reaches a member which never heard
// from it is passed on, at QoS 1, to the member that did, on
// "<prefix><instance>/cmd". The carrier is acknowledged once the broker
// has the forwarded command, which the learner acknowledges once it ran.

// forwardedCommand is a command passed on to another member: the topic and
// payload it arrived with.
type forwardedCommand struct {
	Topic   string `json:"topic"`
	Payload []byte `json:"payload"`
}

// learnedFilter is the filter of the learned-device directory.
func (c *cluster) learnedFilter() string { return c.prefix + "learned/+" }

// commandTopic is where instance takes commands passed on to it.
func (c *cluster) commandTopic(instance string) string { return c.prefix + instance + "/cmd" }

// learner returns the live member other than this one that learned
// device, or "".
func (c *cluster) learner(device string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	inst := c.learnedBy[device]
	if inst == "" || inst == c.cfg.Instance || !c.online[inst] {
		return ""
	}
	return inst
}

// clusterDirectory takes the learned-device directory's messages.
type clusterDirectory struct{ c *cluster }

func (d clusterDirectory) ServeMQTT(m *mqttside.Delivery) {
	defer m.Ack()
	device, ok := strings.CutPrefix(m.Topic, d.c.prefix+"learned/")
	if !ok || device == "" {
		return
	}
	d.c.mu.Lock()
	if len(m.Payload) == 0 {
		delete(d.c.learnedBy, device)
	} else {
		d.c.learnedBy[device] = string(m.Payload)
	}
	d.c.mu.Unlock()
}

// announce queues the directory entry saying this member learned device.
func (c *cluster) announce(device string) {
	if mqttside.ValidateTopic(c.prefix+"learned/"+device) != nil {
		return // a name no topic level can carry: not forwarded to
	}
	c.mu.Lock()
	c.learnedBy[device] = c.cfg.Instance
	c.toAnnounce[device] = struct{}{}
	c.mu.Unlock()
	select {
	case c.announceWake <- struct{}{}:
	default:
	}
}

// announcer publishes the queued directory entries until ctx ends or
// stop is closed.
func (c *cluster) announcer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.stop:
			return
		case <-c.announceWake:
		}
		c.mu.Lock()
		devices := make([]string, 0, len(c.toAnnounce))
		for d := range c.toAnnounce {
			devices = append(devices, d)
		}
		clear(c.toAnnounce)
		c.mu.Unlock()
		for _, d := range devices {
			pctx, cancel := context.WithTimeout(ctx, c.publishTimeout)
			err := c.pub.Publish(pctx, mqttside.Message{Topic: c.prefix + "learned/" + d, Payload: []byte(c.cfg.Instance), QoS: 1, Retain: true})
			cancel()
			if err != nil && !errors.Is(err, mqttside.ErrPending) {
				c.log.Warn("cluster: learned device not announced", "device", d, "err", err)
			}
		}
	}
}

// forwardCommand passes cmd, for a learned device this member never heard
// from, to the member that learned it; it reports false when there is
// none or the broker did not take it, and cmd runs here.
func (b *Bridge) forwardCommand(ctx context.Context, cmd *command) bool {
	name := deviceName(cmd.target)
	to := b.cluster.learner(name)
	if to == "" {
		return false
	}
	body, err := json.Marshal(forwardedCommand{Topic: cmd.delivery.Topic, Payload: cmd.delivery.Payload})
	if err != nil {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	err = b.mqtt.Publish(pctx, mqttside.Message{Topic: b.cluster.commandTopic(to), Payload: body, QoS: 1})
	if err != nil && !errors.Is(err, mqttside.ErrPending) {
		b.log.Warn("cluster: command not forwarded, run here", "device", name, "instance", to, "err", err)
		return false
	}
	b.cluster.forwarded.Inc()
	b.log.Debug("cluster: command forwarded", "device", name, "instance", to, "topic", cmd.delivery.Topic)
	cmd.delivery.Ack()
	return true
}

// forwardedCommands takes the commands other members pass on to this one.
type forwardedCommands struct{ b *Bridge }

func (f forwardedCommands) ServeMQTT(d *mqttside.Delivery) {
	var fc forwardedCommand
	if err := json.Unmarshal(d.Payload, &fc); err != nil || fc.Topic == "" {
		f.b.log.Warn("cluster: forwarded command unreadable, dropped", "topic", d.Topic, "err", err)
		d.Ack()
		return
	}
	filter := fc.Topic
	if rule, _, ok := f.b.set.Load().MatchCommand(fc.Topic, nil); ok {
		filter = f.b.cfg.Cluster.shareFilter(rule.Filter.Filter())
	}
	f.b.commands.serve(d.Forwarded(mqttside.Message{Topic: fc.Topic, Payload: fc.Payload, QoS: d.QoS}, filter), true)
}
