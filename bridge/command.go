package bridge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
)

// commandResult is the JSON published to a command's response topic.
type commandResult struct {
	// Status is ok (the device answered), timeout, error, queued or expired.
	Status string `json:"status"`
	Rule   string `json:"rule"`
	Topic  string `json:"topic"`
	Device string `json:"device,omitempty"`
	Method string `json:"method"`
	URL    string `json:"url,omitempty"`
	// Code is the device's response code ("2.04"), CodeName its text.
	Code          string `json:"code,omitempty"`
	CodeName      string `json:"code_name,omitempty"`
	ContentFormat *int   `json:"content_format,omitempty"`
	// Payload is the response body: JSON as is, UTF-8 text as a string;
	// anything else is in PayloadBase64. It always holds JSON (see
	// marshal).
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 string          `json:"payload_base64,omitempty"`
	RTTMillis     float64         `json:"rtt_ms"`
	Error         string          `json:"error,omitempty"`
	// Position (from 1) and ExpiresAt (RFC 3339, UTC) of a queued command.
	Position  int    `json:"position,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty"`
}

// command is one MQTT message on its way to a device.
type command struct {
	rule     *rules.Command
	caps     rules.Captures
	delivery *mqttside.Delivery
	target   rules.Target
	received time.Time
	// expires ends the command's wait in a device queue (see commandTTL).
	expires time.Time
	// announced is made when the command is to be announced as queued,
	// and closed once it was: its final result waits for that, so the
	// queued result always comes first. nil: never queued for a device
	// (such a command is not acknowledged before its outcome).
	announced chan struct{}
	// forwarded is set on a command another member of the cluster passed
	// on: it is not passed on again.
	forwarded bool
}

// announce marks cmd as about to be announced queued; c.mu is held.
func (cmd *command) announce() { cmd.announced = make(chan struct{}) }

// commands runs command rules: deliveries are queued to a bounded worker
// pool; a device that does not answer is marked offline, probed with
// backoff, and later commands to it wait in a bounded per-device queue
// until it is seen again or they expire. Commands for a learned device
// always go through its queue, sent while it is awake after an uplink
// (queue mode; see command_queue.go).
type commands struct {
	set        *atomic.Pointer[rules.Set]
	pub        publisher
	devices    *deviceClients
	metrics    *metrics
	log        *slog.Logger
	opts       Options
	maxPayload int // largest command payload taken (mqtt.max_payload)
	// presence learns from every answer and timeout (nil: not tracked).
	presence *presence
	// shared maps a rule's filter to the shared subscription made for it
	// in a cluster (nil: the bridge runs alone).
	shared func(filter string) string
	// forward passes a command for a learned device this bridge never
	// heard from to the member of the cluster that learned it, and
	// reports whether it did (nil: the bridge runs alone).
	forward func(ctx context.Context, cmd *command) bool

	work chan *command
	wg   sync.WaitGroup // workers, the expiry loop, probes, drains and the announcer
	// ctx bounds the exchanges with devices; Shutdown ends it first.
	ctx  context.Context
	stop context.CancelFunc
	// publishCtx bounds publishing outcomes; it ends when the shutdown's
	// own deadline does, so no outcome waits for the broker beyond it.
	publishCtx  context.Context
	stopPublish context.CancelFunc
	// handMu is held (read) while ServeMQTT hands a command to the
	// backlog, so that Shutdown knows when nothing more can join it.
	handMu sync.RWMutex

	mu      sync.Mutex
	queue   map[string]*deviceQueue // device not answering -> its waiting commands
	depth   int                     // commands in all queues
	started bool                    // Run started the workers
	closed  bool                    // Shutdown called: start no more goroutines
	// nextExpiry is the earliest expiry of a queued command (or later);
	// expiryWake tells the expiry loop it moved earlier.
	nextExpiry time.Time
	expiryWake chan struct{}
	// keep: state.dir is set, so Shutdown keeps the commands announced
	// queued (in kept, for the state file) instead of answering them.
	keep bool
	kept []*command
	// changed is told when the queues change (the state keeper); nil: no one.
	changed func()
	// state saves the queues (state.dir): a command is announced queued
	// once a save holds it; nil or disabled: announced at once.
	state *stateKeeper
	// pending waits for its saves, in queue order; announcing: the
	// announcer goroutine runs (see announceLocked).
	pending    []announcement
	announcing bool

	// subs holds the filters the bridge is subscribed to (see ServeMQTT).
	subs *subscribed
	// restored is closed once the commands kept in state.dir are back in
	// their queues (restoreCommands); until then the commands delivered
	// wait, since a remote broker hands over the commands it kept for the
	// bridge's session right after it connects, and the restored ones
	// came before them. The broker's stored copies of retained commands,
	// which are not run, do not wait: the embedded broker sends them
	// while it starts. nil: nothing to restore.
	restored chan struct{}
}

func newCommands(set *atomic.Pointer[rules.Set], subs *subscribed, pub publisher, devices *deviceClients, m *metrics, log *slog.Logger, opts Options, maxPayload int) *commands {
	ctx, stop := context.WithCancel(context.Background())
	pctx, stopPublish := context.WithCancel(context.Background())
	return &commands{
		set: set, subs: subs, pub: pub, devices: devices, metrics: m, log: log, opts: opts, maxPayload: maxPayload,
		work: make(chan *command, opts.CommandBacklog),
		ctx:  ctx, stop: stop, publishCtx: pctx, stopPublish: stopPublish,
		queue: map[string]*deviceQueue{}, expiryWake: make(chan struct{}, 1),
	}
}

// Run starts the workers and the expiry of queued commands, and returns
// when Shutdown begins (which waits for them).
func (c *commands) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.closed || c.started {
		c.mu.Unlock()
		return nil
	}
	c.started = true
	for i := 0; i < c.opts.CommandWorkers; i++ {
		c.wg.Add(1)
		go c.worker()
	}
	c.wg.Add(1)
	go c.expireLoop()
	c.mu.Unlock()
	select {
	case <-c.ctx.Done():
	case <-ctx.Done():
		c.stop() // not shut down: nothing is given up gracefully
		c.stopPublish()
	}
	return nil
}

// Shutdown cancels the exchanges in progress and waits for the workers,
// probes and drains to end: each publishes the outcome of the command in
// hand. When ctx ends first, publishing is cut short too, so Shutdown
// returns soon after ctx's deadline and never before its goroutines are
// gone. Commands not sent, or cancelled, are given up (see abandon); those
// announced queued for sleeping or offline devices are answered as expired,
// or, with state.dir, kept for the state file.
func (c *commands) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.stop()
	defer context.AfterFunc(ctx, c.stopPublish)()
	// Wait for ServeMQTT calls handing a command over: from now on they
	// see the bridge closing and nothing joins the backlog.
	c.handMu.Lock()
	//lint:ignore SA2001 a barrier: every hand in progress has ended once the lock is had
	c.handMu.Unlock()
	c.wg.Wait()
	left := 0
	for _, cmd := range c.backlog() {
		if c.abandon(cmd, commandResult{Status: "expired", Error: "bridge shutting down"}) {
			left++
		}
	}
	if left > 0 {
		c.log.Info("commands not sent left to the broker for redelivery", "commands", left)
	}
	c.mu.Lock()
	q := c.queue
	c.queue = map[string]*deviceQueue{}
	c.depth = 0
	c.mu.Unlock()
	c.metrics.queueDepth.Set(0)
	for _, dq := range q {
		for _, cmd := range dq.cmds {
			res := commandResult{Status: "expired", Error: "bridge shutting down"}
			if c.keep && cmd.announced != nil {
				c.mu.Lock()
				c.kept = append(c.kept, cmd) // saved; sent after the restart
				c.mu.Unlock()
				continue
			}
			if cmd.announced == nil {
				// Never acknowledged (it was about to go to an awake
				// device): the broker may deliver it again.
				c.abandon(cmd, res)
				continue
			}
			c.finish(cmd, res, reasonExpired)
		}
	}
	return nil
}

// abandon gives up a command because the bridge is shutting down. A
// message the broker delivers again if it is not acknowledged (QoS 1/2
// from a remote broker) is left unacknowledged, so the broker redelivers
// it once the bridge is back (abandon reports true); any other command is
// answered with res.
func (c *commands) abandon(cmd *command, res commandResult) bool {
	if cmd.delivery.Redeliverable() {
		c.log.Debug("command left to the broker for redelivery", "rule", cmd.rule.Name, "topic", cmd.delivery.Topic)
		return true
	}
	c.finish(cmd, res, reasonExpired)
	return false
}

// ServeMQTT receives a delivery on a command filter and queues it for the
// workers; when the backlog is full it waits for room (back-pressure).
//
// A retained command runs when it is published; the copy the broker
// stores and sends at each subscription (Retain set) is counted, not run.
//
// The topic is matched once, here, to the most specific command rule. A
// message whose topic also matches a less specific filter arrives once per
// filter; only the delivery on the matched rule's own filter runs the
// command, the others are acknowledged. Until that filter is subscribed
// (a reload adding it), the delivery on the other filter runs it instead.
func (c *commands) ServeMQTT(d *mqttside.Delivery) { c.serve(d, false) }

// serve takes a command delivered by the broker or, forwarded, passed on
// by another member of the cluster.
func (c *commands) serve(d *mqttside.Delivery, forwarded bool) {
	set := c.set.Load()
	rule, caps, ok := set.MatchCommand(d.Topic, nil)
	if !ok {
		// A filter from a rule removed by a reload: nothing handles it now.
		c.metrics.ruleError("", reasonNoRoute, errorDetail{errText: "no command rule matches the topic"})
		c.log.Warn("command dropped: no rule matches", "topic", d.Topic)
		d.Ack()
		return
	}
	want := rule.Filter.Filter()
	if c.shared != nil {
		want = c.shared(want)
	}
	if !c.subs.handles(d.Filter, want) {
		c.log.Debug("command delivered on its rule's own filter too", "topic", d.Topic, "rule", rule.Name, "filter", d.Filter)
		d.Ack()
		return
	}
	if d.Retain {
		// The broker's stored copy of a retained command, sent because
		// the bridge subscribed (at each connect and start): the command
		// ran when it was published, it is not run again.
		c.metrics.ruleError(rule.Name, reasonRetained, errorDetail{errText: "retained command not run again: it ran when it was published"})
		c.log.Warn("retained command not run again", "rule", rule.Name, "topic", d.Topic)
		d.Ack()
		return
	}
	if c.restored != nil {
		// A command to run waits behind the ones restored from
		// state.dir. The stored copies above do not: the embedded
		// broker sends them from its start, before those are queued.
		select {
		case <-c.restored:
		case <-c.ctx.Done():
		}
	}
	cmd := &command{rule: rule, caps: caps, delivery: d, received: time.Now(), forwarded: forwarded}
	target, reason, err := planCommand(set, rule, caps, d.Payload, c.maxPayload)
	if err != nil {
		c.finish(cmd, commandResult{Status: "error", Error: err.Error()}, reason)
		return
	}
	cmd.target = target
	cmd.expires = cmd.received.Add(c.commandTTL(rule, d))
	if c.admit(cmd) {
		return
	}
	if !c.hand(cmd) {
		c.abandon(cmd, commandResult{Status: "expired", Error: "bridge shutting down"})
	}
}

// commandTTL is how long a command may wait in a device queue: the rule's
// queue_ttl, else devices.queue_ttl, shortened by the message's own MQTT 5
// expiry when it has one.
func (c *commands) commandTTL(rule *rules.Command, d *mqttside.Delivery) time.Duration {
	ttl := c.opts.CommandQueueTTL
	if rule.QueueTTL > 0 {
		ttl = rule.QueueTTL
	}
	if d.MessageExpiry > 0 {
		ttl = min(ttl, d.MessageExpiry)
	}
	return ttl
}

// hand puts cmd in the workers' backlog. When the backlog is full it holds
// the delivery until a worker takes it: with the embedded broker this slows
// the publishing client down; with a remote broker unacknowledged QoS 1
// messages stop at the broker's in-flight window. Dropping would lose a
// command we accepted. It returns false once the bridge is closing.
func (c *commands) hand(cmd *command) bool {
	c.handMu.RLock()
	defer c.handMu.RUnlock()
	if c.ctx.Err() != nil {
		return false
	}
	select {
	case c.work <- cmd:
		return true
	default:
	}
	c.metrics.backpressure.Inc()
	select {
	case c.work <- cmd:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// backlog empties the workers' backlog.
func (c *commands) backlog() []*command {
	var cmds []*command
	for {
		select {
		case cmd := <-c.work:
			cmds = append(cmds, cmd)
		default:
			return cmds
		}
	}
}

func (c *commands) worker() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case cmd := <-c.work:
			if c.ctx.Err() != nil { // both were ready: closing wins
				c.abandon(cmd, commandResult{Status: "expired", Error: "bridge shutting down"})
				return
			}
			if name := deviceName(cmd.target); name != "" && c.offline(name) {
				c.enqueue(name, cmd)
				continue
			}
			if c.forward != nil && !cmd.forwarded && cmd.target.Learned && !c.known(deviceName(cmd.target)) && c.forward(c.ctx, cmd) {
				continue
			}
			c.execute(cmd)
		}
	}
}

// deviceName is the device a target names: a [[device]] or a learned
// one; "" for a literal address.
func deviceName(t rules.Target) string { return t.Name }

// execute sends one command and publishes its outcome.
func (c *commands) execute(cmd *command) {
	rule := cmd.rule
	res := commandResult{Method: rule.Method.String()}
	req, err := commandRequest(rule, cmd.target, cmd.delivery.Payload)
	if err != nil {
		res.Status, res.Error = "error", err.Error()
		c.finish(cmd, res, reasonConvert)
		return
	}
	res.URL = req.URL.String()
	ctx, cancel := context.WithTimeout(c.ctx, rule.Timeout)
	start := time.Now()
	resp, err := c.devices.doTarget(ctx, cmd.target, req)
	cancel()
	res.RTTMillis = float64(time.Since(start).Microseconds()) / 1000
	name := deviceName(cmd.target)
	// spoke: the device gave a sign of life while the command was under
	// way (a push): a failure of it does not make the device offline.
	spoke := name != "" && err != nil && c.presence.heardSince(name, start)
	switch {
	case err == nil:
		if name != "" {
			c.presence.answered(name)
			c.markOnline(name)
		}
		fillResponse(&res, resp)
		c.metrics.latency.WithLabelValues(rule.Name, dirMQTTToCoAP).Observe(time.Since(cmd.received).Seconds())
		c.finish(cmd, res, "")
	case errors.Is(err, coapside.ErrUnreachable) && name != "" && c.requeue(name, cmd):
		// Nothing listens where the device was (ICMP port unreachable):
		// the command was not delivered, so it waits for the device at the
		// head of its queue instead of ending as a timeout; when the
		// device pushed meanwhile (from a new address) it goes again now.
		c.presence.unreachable(name, err, start)
		if spoke {
			c.markOnline(name)
		}
	case errors.Is(err, coapside.ErrNotSent) && name != "" && c.requeue(name, cmd):
		// It never left: an earlier request to the device was unanswered
		// all this time (NSTART). The device is not answering, so the
		// command waits for it as for an offline one, or goes again now
		// when the device pushed meanwhile.
		if spoke {
			c.markOnline(name)
		}
	case errors.Is(err, coapside.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, coapside.ErrUnreachable):
		// A device whose port reports unreachable (ICMP) is not there
		// either: it is offline like one that does not answer, only
		// found out at once.
		if name != "" && !spoke {
			c.markOffline(name, cmd.target.Learned)
			c.presence.unreachable(name, err, start)
		}
		res.Status, res.Error = "timeout", fmt.Sprintf("no response within %v", rule.Timeout)
		reason := reasonTimeout
		switch {
		case errors.Is(err, coapside.ErrUnreachable):
			res.Error, reason = "no response: the device's port is unreachable", reasonUnreachable
		case errors.Is(err, coapside.ErrNotSent):
			res.Error = fmt.Sprintf("not sent within %v: an earlier request to the device was still unanswered", rule.Timeout)
			res.RTTMillis = 0
		}
		c.finish(cmd, res, reason)
	case c.ctx.Err() != nil:
		res.Status, res.Error = "error", "bridge shutting down during the exchange"
		c.abandon(cmd, res)
	case errors.Is(err, rules.ErrUnknownDevice):
		// A device without url that never spoke to the bridge.
		res.Status, res.Error = "error", err.Error()
		c.finish(cmd, res, reasonUnknownDevice)
	default:
		if name != "" {
			c.presence.unreachable(name, err, start)
		}
		res.Status, res.Error = "error", err.Error()
		c.finish(cmd, res, reasonCoAP)
	}
}

// fillResponse copies a device's response into a result.
func fillResponse(res *commandResult, resp *coapside.Response) {
	res.Status = "ok"
	res.Code = resp.Code.Dotted()
	res.CodeName = resp.Code.String()
	cf, hasCF := resp.Options.ContentFormat()
	if hasCF {
		n := int(cf)
		res.ContentFormat = &n
	}
	if len(resp.Payload) == 0 {
		return
	}
	switch {
	case (!hasCF || cf == message.AppJSON) && json.Valid(resp.Payload):
		res.Payload = json.RawMessage(resp.Payload)
	case (!hasCF || cf == message.TextPlain) && utf8.Valid(resp.Payload):
		res.Payload = appendJSONString(make([]byte, 0, len(resp.Payload)+8), resp.Payload)
	default:
		res.PayloadBase64 = base64.StdEncoding.EncodeToString(resp.Payload)
	}
}

// finish publishes a command's outcome (see publishResult), counts it,
// and only then acknowledges the MQTT message, so a QoS 1 command is
// acknowledged after its CoAP exchange ends.
func (c *commands) finish(cmd *command, res commandResult, reason string) {
	if ch := cmd.announced; ch != nil {
		<-ch // its queued result goes first
		c.touch()
	}
	rule := cmd.rule
	device := res.Device
	if device == "" {
		device = deviceName(cmd.target)
	}
	if reason == "" {
		c.metrics.messages.WithLabelValues(rule.Name, dirMQTTToCoAP).Inc()
		c.metrics.devices.message(device, dirMQTTToCoAP, time.Now())
	} else {
		c.metrics.ruleError(rule.Name, reason, errorDetail{device: device, codeText: res.Code, errText: res.Error})
		c.log.Warn("command failed", "rule", rule.Name, "topic", cmd.delivery.Topic, "status", res.Status, "reason", reason, "err", res.Error)
	}
	c.publishResult(cmd, &res)
	cmd.delivery.Ack()
}

// publishResult publishes a result of cmd to its rule's response topic
// and to the MQTT 5 response topic when the message carried one, both
// with the message's correlation data, and fills in the fields every
// result has (the rule, the command's topic, the device, the method).
func (c *commands) publishResult(cmd *command, res *commandResult) {
	rule := cmd.rule
	res.Rule, res.Topic = rule.Name, cmd.delivery.Topic
	if res.Device == "" {
		res.Device = deviceName(cmd.target)
	}
	if res.Method == "" {
		res.Method = rule.Method.String()
	}
	body := res.marshal()
	ctx, cancel := publishContext(c.publishCtx, c.pub, c.opts.PublishTimeout)
	defer cancel()
	if !rule.ResponseTopic.IsZero() {
		topic, err := replyTopic(rule.ResponseTopic, cmd.caps)
		if err == nil {
			err = c.pub.Publish(ctx, mqttside.Message{Topic: topic, Payload: body, QoS: rule.QoS,
				CorrelationData: cmd.delivery.CorrelationData, ContentType: "application/json"})
		}
		if err != nil {
			c.metrics.ruleError(rule.Name, reasonPublish, errorDetail{device: res.Device, err: err})
			c.log.Warn("command response not published", "rule", rule.Name, "err", err)
		}
	}
	if rt := cmd.delivery.ResponseTopic; rt != "" {
		err := c.pub.Publish(ctx, mqttside.Message{Topic: rt, Payload: body, QoS: rule.QoS,
			CorrelationData: cmd.delivery.CorrelationData, ContentType: "application/json"})
		if err != nil {
			c.log.Warn("command response not published to MQTT 5 response topic", "rule", rule.Name, "err", err)
		}
	}
}

// touch tells the state keeper that the queues changed.
func (c *commands) touch() {
	if c.changed != nil {
		c.changed()
	}
}

// replyTopic renders a command rule's response topic. Its captures come from
// the command's own topic, whose levels are valid MQTT topic levels even
// when the strict rendering refuses them ("..", "." or empty: MQTT topics
// have no path semantics), so a command refused for such a level still
// gets its error result, on the response topic mirroring its own.
func replyTopic(p rules.Pattern, caps rules.Captures) (string, error) {
	topic, err := p.Render(caps)
	if !errors.Is(err, rules.ErrEscape) {
		return topic, err
	}
	var sb strings.Builder
	for i, s := range p.Segments() {
		if i > 0 {
			sb.WriteByte('/')
		}
		if s.Kind == rules.SegLiteral {
			sb.WriteString(s.Text)
			continue
		}
		v, ok := caps.Get(s.Text)
		if !ok {
			return "", fmt.Errorf("%w: {%s}", rules.ErrMissingCapture, s.Text)
		}
		for _, level := range strings.Split(v, "/") {
			if level != "" && level != "." && level != ".." {
				if err := rules.CheckSegment(level); err != nil {
					return "", err
				}
			}
		}
		if s.Kind != rules.SegRest && strings.Contains(v, "/") {
			return "", err
		}
		sb.WriteString(v)
	}
	return sb.String(), nil
}
