package bridge

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
)

// ClusterConfig lets several bridges on one broker share the work. Bridges
// with the same Name form a cluster: each command is handed by the broker
// to one of them (a shared subscription), and each device's observations
// and polls run on one live member, chosen by rendezvous hashing over the
// members the broker reports online.
type ClusterConfig struct {
	// Name is the cluster's name; "" runs the bridge alone.
	Name string `mapstructure:"name"`
	// Instance names this bridge in its cluster, unique among the
	// members; "" means the host name.
	Instance string `mapstructure:"instance"`
}

// enabled reports whether the bridge is a member of a cluster.
func (c ClusterConfig) enabled() bool { return c.Name != "" }

// setDefaults takes the host name for an unnamed instance of a cluster.
func (c *ClusterConfig) setDefaults() {
	if c.Name == "" || c.Instance != "" {
		return
	}
	if h, err := os.Hostname(); err == nil {
		c.Instance = h
	}
}

// validate adds a problem for a name or instance that is not one MQTT
// topic level, and for a cluster without a broker its members share.
func (c ClusterConfig) validate(m MQTTConfig, add func(key, format string, args ...any)) {
	if !c.enabled() {
		return
	}
	level := func(key, v string) {
		switch {
		case v == "":
			add(key, "must not be empty in a cluster (it defaults to the host name)")
		case strings.ContainsAny(v, "+#/\x00"):
			add(key, "%q must be one MQTT topic level, without +, # or /", v)
		}
	}
	level("cluster.name", c.Name)
	level("cluster.instance", c.Instance)
	if c.Instance == "learned" {
		add("cluster.instance", "\"learned\" names the cluster's directory of learned devices; choose another name")
	}
	if m.Broker == "" || m.Broker == mqttside.BrokerEmbedded {
		add("cluster.name", "a cluster needs a remote broker (mqtt.broker = \"tcp://host:1883\"): the embedded broker is each bridge's own, so its members would not share commands nor see each other")
	}
	if m.StatusTopic == "-" {
		add("mqtt.status_topic", "must not be \"-\" in a cluster: the members know each other by their status topics")
	}
}

// statusPrefix begins the status topics of a cluster's members:
// mqtt.status_topic, or "coap-bridge/status" (not "<client_id>/status": the
// members find each other there whatever their client IDs).
func statusPrefix(m MQTTConfig) string {
	if m.StatusTopic != "" {
		return m.StatusTopic
	}
	return mqttside.DefaultClientID + "/status"
}

// membersFilter is the filter of every member's status topic.
func (c ClusterConfig) membersFilter(m MQTTConfig) string {
	return statusPrefix(m) + "/cluster/" + c.Name + "/+"
}

// memberTopic is this member's status topic, "online" while it is
// connected and, by Last Will or goodbye, "offline" once it is not.
func (c ClusterConfig) memberTopic(m MQTTConfig) string {
	return statusPrefix(m) + "/cluster/" + c.Name + "/" + c.Instance
}

// clientID is the member's MQTT client ID: the configured one followed by
// the instance, so the members of a cluster sharing one config file do
// not take each other's session.
func (c ClusterConfig) clientID(m MQTTConfig) string {
	return m.ClientID + "-" + c.Instance
}

// shareFilter is the shared subscription for a command filter: the broker
// hands each message to one member of the group.
func (c ClusterConfig) shareFilter(filter string) string {
	return "$share/" + c.Name + "/" + filter
}

// rendezvousWeight is the weight of member for device: the member with the
// highest weight owns the device, so a change of members moves only the
// devices of the member that left or to the member that joined.
func rendezvousWeight(device, member string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(device))
	h.Write([]byte{0})
	h.Write([]byte(member))
	// FNV's low bits mix poorly; a finalizer (splitmix64) spreads them.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// rendezvousOwner returns the member of members that owns device, or ""
// when there is none.
func rendezvousOwner(device string, members []string) string {
	var owner string
	var best uint64
	for _, m := range members {
		w := rendezvousWeight(device, m)
		if owner == "" || w > best || (w == best && m < owner) {
			owner, best = m, w
		}
	}
	return owner
}

// ownership says which devices this member runs device-bound work for.
type ownership func(device string) bool

// ownsNothing is the ownership of a member that has not joined yet.
func ownsNothing(string) bool { return false }

// cluster follows the members of the bridge's cluster from their retained
// status topics and moves device-bound work (observations, polls and
// catalog reads) to the devices this member owns.
//
// A member joins when the broker echoes its own "online": by then the
// retained status of every other member has come with the subscription.
// When the members change, the devices this member gains start at once and
// those it loses stop handoverGrace later, so a device moving to a member
// that joined is observed by both for a moment rather than by none.
type cluster struct {
	cfg     ClusterConfig
	filter  string // every member's status topic
	prefix  string // the status topic without the instance
	log     *slog.Logger
	rewatch func(context.Context) // applies the watches again under the current ownership
	set     func(ownership)       // makes an ownership the watcher's
	onJoin  func()                // this member's own "online" came back
	grace   time.Duration

	members   prometheus.Gauge
	forwarded prometheus.Counter

	pub            publisher
	publishTimeout time.Duration

	mu         sync.Mutex
	online     map[string]bool     // instance -> its status says online
	joined     bool                // this member's own "online" came back
	learnedBy  map[string]string   // device -> the member that announced it learned it
	toAnnounce map[string]struct{} // devices learned here, to announce

	announceWake chan struct{} // cap 1

	changed chan struct{} // cap 1
	stop    chan struct{}
	once    sync.Once
}

// handoverGrace is how long a member keeps the devices it loses to a
// member that joined, so the new owner's observation is made before the
// old one ends.
const handoverGrace = 2 * time.Second

func newCluster(cfg ClusterConfig, m MQTTConfig, reg prometheus.Registerer, log *slog.Logger) *cluster {
	c := &cluster{
		cfg:    cfg,
		filter: cfg.membersFilter(m),
		prefix: strings.TrimSuffix(cfg.membersFilter(m), "+"),
		log:    log.With("cluster", cfg.Name, "instance", cfg.Instance),
		grace:  handoverGrace,
		online: map[string]bool{},

		learnedBy:    map[string]string{},
		toAnnounce:   map[string]struct{}{},
		announceWake: make(chan struct{}, 1),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bridge_cluster_commands_forwarded_total",
			Help: "Commands for a learned device passed on to the member of the cluster that learned it.",
		}),
		changed: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_cluster_members",
			Help: "Live members of the bridge's cluster, this one included once it has joined.",
		}),
	}
	reg.MustRegister(c.members, c.forwarded)
	return c
}

// ServeMQTT takes a member's status message.
func (c *cluster) ServeMQTT(d *mqttside.Delivery) {
	defer d.Ack()
	instance, ok := strings.CutPrefix(d.Topic, c.prefix)
	if !ok || instance == "" {
		return
	}
	up := string(d.Payload) == "online"
	c.mu.Lock()
	changed := c.online[instance] != up
	if up {
		c.online[instance] = true
	} else {
		delete(c.online, instance)
	}
	joined := instance == c.cfg.Instance && up && !c.joined
	if joined {
		c.joined, changed = true, true
	}
	c.mu.Unlock()
	if joined && c.onJoin != nil {
		c.onJoin()
	}
	if changed {
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}
}

// live returns the members that own devices: none before this member
// joined, sorted.
func (c *cluster) live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.joined {
		return nil
	}
	out := make([]string, 0, len(c.online)+1)
	for m := range c.online {
		out = append(out, m)
	}
	if !c.online[c.cfg.Instance] {
		// Our own "offline" (a Last Will from a connection the broker
		// thought dead) until the next connect says "online" again: we
		// still run and keep our devices.
		out = append(out, c.cfg.Instance)
	}
	slices.Sort(out)
	return out
}

// owner returns the ownership of this member among members.
func (c *cluster) owner(members []string) ownership {
	self := c.cfg.Instance
	return func(device string) bool { return rendezvousOwner(device, members) == self }
}

// Run follows membership changes until Shutdown or ctx ends.
func (c *cluster) Run(ctx context.Context) error {
	announced := make(chan struct{})
	go func() { defer close(announced); c.announcer(ctx) }()
	defer func() { <-announced }()
	var (
		prev  []string
		grace <-chan time.Time
		timer *time.Timer
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
		case <-c.stop:
			return nil
		case <-grace:
			grace = nil
			c.set(c.owner(prev))
			c.rewatch(ctx)
			c.log.Debug("cluster handover done", "members", len(prev))
		case <-c.changed:
			members := c.live()
			if slices.Equal(members, prev) {
				continue
			}
			c.members.Set(float64(len(members)))
			c.log.Info("cluster members changed", "members", strings.Join(members, ","))
			now := c.owner(members)
			if prev == nil {
				c.set(now)
			} else {
				// Keep what we had until the new owners had time to start.
				before := c.owner(prev)
				c.set(func(d string) bool { return now(d) || before(d) })
				if timer != nil {
					timer.Stop()
				}
				timer = time.NewTimer(c.grace)
				grace = timer.C
			}
			prev = members
			c.rewatch(ctx)
		}
	}
}

// Shutdown stops following the members; the watches stop with the
// watcher.
func (c *cluster) Shutdown(ctx context.Context) error {
	c.once.Do(func() { close(c.stop) })
	return nil
}

// keepOwned drops from want the groups of devices another member of the
// cluster owns. A device without url is reached where it last spoke from,
// which only the members it spoke to know: its groups run on the members
// that learned it, whoever owns its name.
func (wt *watcher) keepOwned(want map[string]*watchGroup) {
	owns := wt.owns.Load()
	if owns == nil {
		return
	}
	for k, g := range want {
		if g.device.Host == "" {
			if _, ok := wt.devices.learned.lookup(g.device.Name); !ok {
				delete(want, k)
			}
			continue
		}
		if !(*owns)(g.device.Name) {
			delete(want, k)
		}
	}
}

// ownedDevices counts the devices with a running watch.
func (wt *watcher) ownedDevices() int {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	seen := map[string]struct{}{}
	for _, run := range wt.running {
		seen[run.g.device.Name] = struct{}{}
	}
	return len(seen)
}

// mqttSubscriptions lists the MQTT subscriptions of set's rules as the
// bridge makes them: in a cluster a command filter is a shared
// subscription, while resource rules keep theirs, since every member
// serves them.
func (b *Bridge) mqttSubscriptions(set *rules.Set) []rules.Subscription {
	if set == nil {
		return nil
	}
	subs := set.Subscriptions()
	if b.cluster == nil {
		return subs
	}
	for i, s := range subs {
		if s.Kind == rules.KindCommand {
			subs[i].Filter = b.cfg.Cluster.shareFilter(s.Filter)
		}
	}
	return subs
}

// subscriptionChanges returns the MQTT filters of old that new has not
// (removed), and those of new that old has not or with another QoS
// (added, the highest QoS of the filter's rules).
func subscriptionChanges(old, new []rules.Subscription) (removed, added []rules.Subscription) {
	unique := func(subs []rules.Subscription) map[string]rules.Subscription {
		m := map[string]rules.Subscription{}
		for _, s := range subs {
			if p, ok := m[s.Filter]; ok {
				s.QoS = max(s.QoS, p.QoS)
				s.Kind, s.Rule = p.Kind, p.Rule
			}
			m[s.Filter] = s
		}
		return m
	}
	o, n := unique(old), unique(new)
	for f, s := range o {
		if _, ok := n[f]; !ok {
			removed = append(removed, s)
		}
	}
	for f, s := range n {
		if p, ok := o[f]; !ok || p.QoS != s.QoS {
			added = append(added, s)
		}
	}
	slices.SortFunc(removed, func(a, b rules.Subscription) int { return strings.Compare(a.Filter, b.Filter) })
	slices.SortFunc(added, func(a, b rules.Subscription) int { return strings.Compare(a.Filter, b.Filter) })
	return removed, added
}

// rewatch applies the watches again, for a new ownership of the devices.
func (b *Bridge) rewatch(ctx context.Context) {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	set := b.set.Load()
	wa, wr, wc, wk := b.watches.apply(ctx, b.learnedWatches(set), b.catalogDevices(set, b.learned.names()))
	b.log.Info("cluster devices moved", "watches_added", wa, "watches_removed", wr, "watches_restarted", wc, "watches_kept", wk, "devices", b.watches.ownedDevices())
}

// joinCluster makes the bridge a member of its cluster: its status topic
// and client ID become its own, commands come through shared
// subscriptions, and it watches no device until it has joined.
func (b *Bridge) joinCluster(reg prometheus.Registerer) {
	if !b.cfg.Cluster.enabled() {
		return
	}
	c := newCluster(b.cfg.Cluster, b.cfg.MQTT, reg, b.log)
	none := ownership(ownsNothing)
	b.watches.owns.Store(&none)
	c.set = func(o ownership) { b.watches.owns.Store(&o) }
	c.rewatch = b.rewatch
	c.pub, c.publishTimeout = b.mqtt, b.opts.PublishTimeout
	b.commands.shared = b.cfg.Cluster.shareFilter
	b.commands.forward = b.forwardCommand
	c.onJoin = func() { b.health.set("cluster", true) }
	b.health.set("cluster", false)
	w := b.watches
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bridge_cluster_owned_devices",
		Help: "Devices whose observations and polls this member of the cluster runs.",
	}, func() float64 { return float64(w.ownedDevices()) }))
	b.cluster = c
}

// checkClusterRules refuses, in a cluster, a command rule whose filter
// overlaps a resource rule's: every member subscribes the resource filter
// and one the command's shared one, and an MQTT 3.1.1 delivery does not
// say through which subscription it came, so each member would run the
// command.
func checkClusterRules(cfg Config, set *rules.Set) rules.Errors {
	if !cfg.Cluster.enabled() {
		return nil
	}
	var es rules.Errors
	for _, c := range set.Commands {
		for _, r := range set.Resources {
			if filtersOverlap(c.Filter.Filter(), r.Topic.Filter()) {
				es = append(es, rules.Error{File: c.Pos.File, Line: c.Pos.Line, Msg: fmt.Sprintf(
					"[[command]] %q: filter %q overlaps [[resource]] %q (%q): in a cluster every member would run the commands it shares with the resource rule; give them topics apart",
					c.Name, c.Filter.Filter(), r.Name, r.Topic.Filter())})
			}
		}
	}
	return es
}

// filtersOverlap reports whether some topic matches both MQTT filters.
func filtersOverlap(a, b string) bool {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; ; i++ {
		switch {
		case i < len(as) && as[i] == "#", i < len(bs) && bs[i] == "#":
			return true
		case i == len(as) && i == len(bs):
			return true
		case i == len(as), i == len(bs):
			return false // "a/#" matching "a" was the case above
		case as[i] != bs[i] && as[i] != "+" && bs[i] != "+":
			return false
		}
	}
}

// clusterStatus is /readyz's line about the cluster: "" when the bridge
// runs alone.
func (b *Bridge) clusterStatus() string {
	c := b.cluster
	if c == nil {
		return ""
	}
	members := c.live()
	if members == nil {
		return fmt.Sprintf("cluster %s: instance %s not joined yet\n", c.cfg.Name, c.cfg.Instance)
	}
	return fmt.Sprintf("cluster %s: instance %s, %d members (%s), %d devices owned\n",
		c.cfg.Name, c.cfg.Instance, len(members), strings.Join(members, ","), b.watches.ownedDevices())
}
