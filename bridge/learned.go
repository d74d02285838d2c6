package bridge

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coap-mqtt/bridge/coapside"
)

// DefaultMaxLearned bounds the learned-device registry when
// devices.max_learned is 0.
const DefaultMaxLearned = 100_000

// Via is the transport a device was learned over.
type Via uint8

// The transports a device can be learned over.
const (
	ViaUDP Via = iota + 1
	ViaDTLS
)

// String returns "udp" or "dtls", the presence document's spelling.
func (v Via) String() string {
	switch v {
	case ViaUDP:
		return "udp"
	case ViaDTLS:
		return "dtls"
	}
	return "unknown"
}

// LearnedDevice is what the bridge knows of a device from its own
// requests: where it last spoke from and when.
type LearnedDevice struct {
	Name string
	// Addr is the source address of its latest request: behind NAT, the
	// binding its NAT opened towards the bridge.
	Addr netip.AddrPort
	// Endpoint is the bridge's socket the device talks to; requests to
	// the device leave from it, the one path its NAT lets in.
	Endpoint *coapside.Endpoint
	Via      Via
	// Authenticated: the device proved its name (a DTLS identity equal to
	// it), so requests that do not cannot move it.
	Authenticated bool
	LastSeen      time.Time
}

// LearnKind says what a request told the registry.
type LearnKind uint8

// What a request told the registry.
const (
	// Learned: a device not known before.
	Learned LearnKind = iota + 1
	// Moved: a known device spoke from a new address or socket (NAT
	// rebinding, a reboot, a roam).
	Moved
	// Seen: a known device spoke again from where it was.
	Seen
	// RefusedFull: a new device while the registry is full; not recorded.
	RefusedFull
	// RefusedClaim: a request that does not prove the device's name
	// tried to move a device that did; not recorded.
	RefusedClaim
)

// LearnEvent is passed to the registry's hook after every request that
// named a device.
type LearnEvent struct {
	Kind LearnKind
	// Device is what the request told. Its Name may share memory with
	// the request (except for Learned): a hook that keeps it clones it.
	Device LearnedDevice
	// From is the previous address of a device that Moved.
	From netip.AddrPort
	// Before is the time of the device's previous request, for a device
	// Seen or Moved: how long it was silent tells whether it slept.
	Before time.Time
}

// learnedEntry is the registry's record of a device: kept small, as a
// bridge may learn a whole fleet (see TestLearnedMemoryPerDevice).
type learnedEntry struct {
	addr netip.AddrPort
	ep   *coapside.Endpoint
	seen int64 // unix nanoseconds
	via  Via
	auth bool
}

// learnedDevices is the registry of devices learned from their requests
// to the bridge's CoAP server, by name. It is bounded: once it holds max
// devices, new names are refused (and counted) while the known ones keep
// moving and being seen.
type learnedDevices struct {
	max int
	// hook, when set, is called after every learn, outside the lock; it
	// must not block (presence and queued commands build on it).
	hook func(LearnEvent)

	mu      sync.RWMutex
	devices map[string]*learnedEntry // entries change in place
	// byAddr is the device last learned at each address (unmapped), for
	// a request that names a device by its address.
	byAddr map[netip.AddrPort]string

	refused *prometheus.CounterVec // reason: full, claim
}

func newLearnedDevices(max int, reg prometheus.Registerer, hook func(LearnEvent)) *learnedDevices {
	if max <= 0 {
		max = DefaultMaxLearned
	}
	l := &learnedDevices{max: max, hook: hook, devices: map[string]*learnedEntry{}, byAddr: map[netip.AddrPort]string{}}
	l.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridge_learned_refused_total",
		Help: "Requests whose device was not learned: full (devices.max_learned reached) or claim (an unauthenticated request naming a device learned over DTLS).",
	}, []string{"reason"})
	if reg != nil {
		reg.MustRegister(l.refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bridge_learned_devices",
			Help: "Devices the bridge has learned the address of from their requests.",
		}, func() float64 { return float64(l.len()) }))
	}
	return l
}

// learn records that device name spoke from addr on ep at now. A device
// learned with authenticated set is moved only by requests that are too.
func (l *learnedDevices) learn(name string, addr netip.AddrPort, ep *coapside.Endpoint, via Via, authenticated bool, now time.Time) LearnKind {
	ev := LearnEvent{Device: LearnedDevice{Name: name, Addr: addr, Endpoint: ep, Via: via, Authenticated: authenticated, LastSeen: now}}
	e := learnedEntry{addr: addr, ep: ep, seen: now.UnixNano(), via: via, auth: authenticated}
	l.mu.Lock()
	old, ok := l.devices[name]
	switch {
	case !ok && len(l.devices) >= l.max:
		ev.Kind = RefusedFull
	case !ok:
		// The name is a slice of the request's datagram: a copy of its
		// own keeps the datagram from being retained.
		ev.Device.Name = strings.Clone(name)
		ev.Kind = Learned
		fresh := e // only a new device is allocated
		l.devices[ev.Device.Name] = &fresh
		l.byAddr[unmapped(addr)] = ev.Device.Name
	case old.auth && !authenticated:
		ev.Kind = RefusedClaim
	default:
		// Updated in place: storing under the request's name again would
		// make the map keep that (the datagram's) string as its key.
		// A device restored from state.dir (no socket yet) is reached from
		// the UDP listener, the one its UDP request came on.
		sameSocket := old.ep == ep || (old.ep == nil && via == ViaUDP)
		if old.addr != addr || !sameSocket || old.via != via {
			ev.Kind, ev.From = Moved, old.addr
			if old.addr != addr {
				if from := unmapped(old.addr); l.byAddr[from] == name {
					delete(l.byAddr, from)
				}
				l.byAddr[unmapped(addr)] = strings.Clone(name) // moves are rare
			}
		} else {
			ev.Kind = Seen
		}
		ev.Before = time.Unix(0, old.seen)
		*old = e
	}
	l.mu.Unlock()
	switch ev.Kind {
	case RefusedFull:
		l.refused.WithLabelValues("full").Inc()
	case RefusedClaim:
		l.refused.WithLabelValues("claim").Inc()
	}
	if l.hook != nil {
		l.hook(ev)
	}
	return ev.Kind
}

// lookup returns what is known of device name.
func (l *learnedDevices) lookup(name string) (LearnedDevice, bool) {
	l.mu.RLock()
	var e learnedEntry
	p, ok := l.devices[name]
	if ok {
		e = *p // learn updates entries in place, under the lock
	}
	l.mu.RUnlock()
	if !ok {
		return LearnedDevice{}, false
	}
	return LearnedDevice{Name: name, Addr: e.addr, Endpoint: e.ep, Via: e.via, Authenticated: e.auth, LastSeen: time.Unix(0, e.seen)}, true
}

// names lists the learned devices.
func (l *learnedDevices) names() []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]string, 0, len(l.devices))
	for n := range l.devices {
		out = append(out, n)
	}
	return out
}

// len is the number of learned devices.
func (l *learnedDevices) len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.devices)
}

// addrPort converts a request's source address; ok is false for an
// address that is not IP and port.
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	if u, ok := a.(*net.UDPAddr); ok {
		return unmapped(u.AddrPort()), true
	}
	if a == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return unmapped(ap), true
}

// learnLogger logs what the registry learns: a device's first request
// and NAT rebindings at Info, refusals at Warn (a full registry at most
// once per learnLogEvery), a device seen again at Debug.
func learnLogger(log *slog.Logger) func(LearnEvent) {
	var lastFull atomic.Int64
	return func(ev LearnEvent) {
		d := ev.Device
		switch ev.Kind {
		case Learned:
			log.Info("device learned", "device", d.Name, "address", d.Addr.String(), "via", d.Via.String())
		case Moved:
			log.Info("device moved", "device", d.Name, "from", ev.From.String(), "address", d.Addr.String(), "via", d.Via.String())
		case RefusedClaim:
			log.Warn("device not moved: the request does not prove its name", "device", d.Name, "address", d.Addr.String(), "via", d.Via.String())
		case RefusedFull:
			now := time.Now().UnixNano()
			last := lastFull.Load()
			if now-last >= int64(learnLogEvery) && lastFull.CompareAndSwap(last, now) {
				log.Warn("device not learned: devices.max_learned reached", "device", d.Name, "address", d.Addr.String())
			}
		default:
			log.Debug("device seen", "device", d.Name, "address", d.Addr.String())
		}
	}
}

// learnLogEvery spaces the warnings about a full registry.
const learnLogEvery = 10 * time.Second

// at names the learned device that last spoke from addr. It looks at
// every device: a forward-proxy request naming a device by address is
// rare next to the requests naming it.
func (l *learnedDevices) at(addr netip.AddrPort) (string, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	name, ok := l.byAddr[unmapped(addr)]
	return name, ok
}

// unmapped is addr with an IPv4-mapped IPv6 address as plain IPv4.
func unmapped(addr netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
}
