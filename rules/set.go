package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
)

// Set is a loaded, validated and indexed rule set. It is immutable after
// loading and safe for concurrent use; a reload builds a new Set (see Diff).
type Set struct {
	Devices   []*Device
	Ingress   []*Ingress
	Observe   []*Observe
	Poll      []*Poll
	Commands  []*Command
	Resources []*Resource
	Proxies   []*Proxy

	devices  map[string]*Device
	routes   *Index[*Route]
	commands *Index[*Command]
	proxies  *Index[*Proxy] // forward and HTTP proxy rules by device and url path
}

// Route is what the bridge's CoAP server dispatches to: exactly one of
// Ingress, Resource and Proxy is set.
type Route struct {
	Ingress  *Ingress
	Resource *Resource
	Proxy    *Proxy
}

// Name returns the rule name.
func (r *Route) Name() string {
	switch {
	case r.Ingress != nil:
		return r.Ingress.Name
	case r.Proxy != nil:
		return r.Proxy.Name
	}
	return r.Resource.Name
}

// Path returns the rule's path pattern.
func (r *Route) Path() Pattern {
	switch {
	case r.Ingress != nil:
		return r.Ingress.Path
	case r.Proxy != nil:
		return r.Proxy.Path
	}
	return r.Resource.Path
}

// Allows reports whether the route takes the method: an ingress or proxy
// its methods, a resource GET and FETCH (RFC 8132 §2).
func (r *Route) Allows(m message.Code) bool {
	switch {
	case r.Ingress != nil:
		return r.Ingress.Allows(m)
	case r.Proxy != nil:
		return r.Proxy.Allows(m)
	}
	return m == message.GET || m == message.FETCH
}

func (r *Route) methods() []message.Code {
	switch {
	case r.Ingress != nil:
		return r.Ingress.Methods
	case r.Proxy != nil:
		return r.Proxy.Methods
	}
	return []message.Code{message.GET, message.FETCH}
}

func (r *Route) describe() string {
	switch {
	case r.Ingress != nil:
		return ruleName(KindIngress, r.Ingress.Name)
	case r.Proxy != nil:
		return ruleName(KindProxy, r.Proxy.Name)
	}
	return ruleName(KindResource, r.Resource.Name)
}

func (r *Route) pos() Pos {
	switch {
	case r.Ingress != nil:
		return r.Ingress.Pos
	case r.Proxy != nil:
		return r.Proxy.Pos
	}
	return r.Resource.Pos
}

// Device returns the registry entry named name.
func (s *Set) Device(name string) (*Device, bool) {
	d, ok := s.devices[name]
	return d, ok
}

// MatchPath finds the route for a request to the bridge's CoAP server. segs
// are the Uri-Path option values (RFC 7252 §6.4). It fails with ErrNoRoute
// (4.04), ErrMethodNotAllowed (4.05) or, for a segment bound to a capture
// that cannot stand as one topic level (see CheckSegment), ErrEscape
// (4.00). Captures are appended to dst.
func (s *Set) MatchPath(m message.Code, segs []string, dst Captures) (*Route, Captures, error) {
	r, caps, ok, matched := s.routes.Match(segs, func(r *Route) bool { return r.Allows(m) }, dst)
	switch {
	case ok:
		if err := r.Path().checkCaptured(segs); err != nil {
			return r, dst, err // the rule that took the path, for its error count
		}
		return r, caps, nil
	case matched:
		return nil, dst, ErrMethodNotAllowed
	}
	return nil, dst, ErrNoRoute
}

// MatchCommand finds the command rule for an MQTT topic and appends its
// captures to dst. {name...} needs at least one level: a publish to the
// parent level, which the '#' subscription also delivers ([MQTT-4.7.1-2]),
// matches nothing and is the caller's to count as unrouted.
func (s *Set) MatchCommand(topic string, dst Captures) (*Command, Captures, bool) {
	return s.commands.MatchTopic(topic, nil, dst)
}

// Target renders a command's destination: its address and request options.
// A host capture names a device: a [[device]], whose own url decides scheme
// and address, or else a device the bridge may have learned (Learned, the
// rule's scheme): an MQTT publisher can pick among devices, never an
// arbitrary address. A [[device]] without url is Learned too. A path
// segment longer than a CoAP option allows fails with uri.ErrInvalidURL.
func (s *Set) Target(c *Command, caps Captures) (Target, error) { return s.target(c.URL, caps) }

// target renders a url template with captures (see Target).
func (s *Set) target(u URLTemplate, caps Captures) (Target, error) {
	path, err := u.path.RenderSegments(caps)
	if err != nil {
		return Target{}, err
	}
	t := Target{Secure: u.secure, Path: path}
	name := u.host
	if u.hostCapture != "" {
		v, ok := caps.Get(u.hostCapture)
		if !ok {
			return Target{}, fmt.Errorf("%w: {%s}", ErrMissingCapture, u.hostCapture)
		}
		if err := CheckSegment(v); err != nil {
			return Target{}, fmt.Errorf("{%s}: %w", u.hostCapture, err)
		}
		name = v
	}
	var host message.Options
	d, ok := s.devices[name]
	switch {
	case ok && d.Host != "":
		t.Device, t.Name, t.Secure, t.Host, host = d, d.Name, d.Secure, d.Host, d.Options
	case ok:
		t.Device, t.Name, t.Learned = d, d.Name, true
	case u.hostCapture != "":
		t.Name, t.Learned = name, true
	default:
		t.Host, host = u.authority.Addr(), u.authority.Options()
	}
	// A copy: the device's options are shared by every command to it.
	if t.Options, err = uri.AppendPath(slices.Clone(host), path); err != nil {
		return Target{}, err
	}
	return t, nil
}

// Subscription is one MQTT subscription the rule set needs.
type Subscription struct {
	// Filter is the MQTT topic filter.
	Filter string
	// QoS is the maximum QoS requested.
	QoS byte
	// Kind is KindCommand or KindResource; Rule the rule name.
	Kind Kind
	Rule string
}

// Subscriptions lists the MQTT subscriptions of command and resource rules.
// Command subscriptions use QoS 1 so a command is not lost in transit.
func (s *Set) Subscriptions() []Subscription {
	out := make([]Subscription, 0, len(s.Commands)+len(s.Resources))
	for _, c := range s.Commands {
		out = append(out, Subscription{Filter: c.Filter.Filter(), QoS: 1, Kind: KindCommand, Rule: c.Name})
	}
	for _, r := range s.Resources {
		out = append(out, Subscription{Filter: r.Topic.Filter(), QoS: 1, Kind: KindResource, Rule: r.Name})
	}
	return out
}

// Watch is one (device, resource) pair that an observe or poll rule keeps
// fed: the unit the bridge starts and stops on reload. For an observe rule
// with discover, Path is empty and the bridge finds the paths itself.
type Watch struct {
	Device *Device
	Path   string
	// Exactly one of Observe and Poll is set.
	Observe *Observe
	Poll    *Poll
}

// Discovery reports whether the watch stands for an observe rule's discover
// query on its device: the bridge reads /.well-known/core with the query
// (RFC 6690 §4) and observes each listed resource, rather than observing
// Path itself.
func (w Watch) Discovery() bool { return w.Path == "" && w.Observe != nil && w.Observe.Discover != "" }

// Key identifies the watch across reloads: device and path, or device and
// rule for discovery, then the rule. Several rules may feed from one device
// resource; the bridge groups them by device and path.
func (w Watch) Key() string {
	if w.Path == "" && w.Observe != nil {
		return w.Device.Name + " discover " + w.Observe.Name
	}
	if w.Poll != nil {
		return w.Device.Name + " " + w.Path + " poll " + w.Poll.Name
	}
	return w.Device.Name + " " + w.Path + " observe " + w.Observe.Name
}

// Captures returns {device} and {path...} as observe and poll rules bind
// them: the device name and the path without its leading '/'.
func (w Watch) Captures() Captures {
	return Captures{{Name: "device", Value: w.Device.Name}, {Name: "path", Value: strings.TrimPrefix(w.Path, "/")}}
}

// AllDevices in an observe or poll rule's devices ("*") stands for every
// device the bridge learns, as it learns it (see LearnedWatches).
const AllDevices = "*"

// Watches lists every device resource observed or polled, and one watch per
// device of each observe rule using discover. A [[device]] without url is
// listed too: the bridge reaches it once it has learned where it is.
// Devices covered by AllDevices are not: see LearnedWatches.
func (s *Set) Watches() []Watch {
	var out []Watch
	for _, o := range s.Observe {
		for _, dn := range o.Devices {
			if d, ok := s.devices[dn]; ok {
				out = appendObserveWatches(out, o, d)
			}
		}
	}
	for _, o := range s.Poll {
		for _, dn := range o.Devices {
			if d, ok := s.devices[dn]; ok {
				out = appendPollWatches(out, o, d)
			}
		}
	}
	return out
}

// LearnedWatches lists the watches of the rules with devices = ["*"] for
// the learned device name: its [[device]] entry when it has one, else a
// device without url (reached where it was learned).
func (s *Set) LearnedWatches(name string) []Watch {
	var d *Device
	var out []Watch
	dev := func() *Device {
		if d == nil {
			if d = s.devices[name]; d == nil {
				d = &Device{Name: name}
			}
		}
		return d
	}
	for _, o := range s.Observe {
		if slices.Equal(o.Devices, []string{AllDevices}) {
			out = appendObserveWatches(out, o, dev())
		}
	}
	for _, o := range s.Poll {
		if slices.Equal(o.Devices, []string{AllDevices}) {
			out = appendPollWatches(out, o, dev())
		}
	}
	return out
}

// HasLearnedWatches reports whether a rule has devices = ["*"].
func (s *Set) HasLearnedWatches() bool {
	for _, o := range s.Observe {
		if slices.Equal(o.Devices, []string{AllDevices}) {
			return true
		}
	}
	for _, o := range s.Poll {
		if slices.Equal(o.Devices, []string{AllDevices}) {
			return true
		}
	}
	return false
}

func appendObserveWatches(out []Watch, o *Observe, d *Device) []Watch {
	if o.Discover != "" {
		out = append(out, Watch{Device: d, Observe: o})
	}
	for _, p := range o.Paths {
		out = append(out, Watch{Device: d, Path: p, Observe: o})
	}
	return out
}

func appendPollWatches(out []Watch, o *Poll, d *Device) []Watch {
	for _, p := range o.Paths {
		out = append(out, Watch{Device: d, Path: p, Poll: o})
	}
	return out
}
