package rules

import (
	"fmt"
	"strings"
	"time"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// MinPollInterval is the shortest poll interval a rule may set, so a typo
// cannot flood a constrained device.
const MinPollInterval = 100 * time.Millisecond

// validDiscover checks a discovery filter: one "name=value" or "name" query
// parameter, the value optionally ending in '*' for a prefix match
// (RFC 6690 §4.1).
func validDiscover(q string) bool {
	name, value, hasValue := strings.Cut(q, "=")
	if name == "" || (hasValue && value == "") {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	for i, c := range value {
		if c <= ' ' || c == '&' || c == 0x7f || (c == '*' && i != len(value)-1) {
			return false
		}
	}
	return true
}

// validDeviceName reports whether s can be a device name: it is used as a
// URL host and as a topic level, so letters, digits, '.', '_' and '-' only.
func validDeviceName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (x *dec) device() *Device {
	r := &Device{Pos: x.e.pos, hash: x.hash()}
	name, line, ok := x.str("name", true)
	if ok && !validDeviceName(name) {
		x.d.addf(x.pos(line), "device name %q: use letters, digits, '.', '_' or '-'", clip(name))
	}
	r.Name = name
	// Without a url the device is reached where it last spoke from (a
	// learned device): the bridge's own CoAP port, the path its NAT opened.
	if u, line, ok := x.str("url", false); ok {
		r.URL = u
		a, err := parseDeviceURL(u)
		if err != nil {
			x.d.addf(x.pos(line), "key \"url\": %v", err)
			return r
		}
		r.Secure, r.Host, r.Options = a.Secure, a.Addr(), a.Options()
	}
	r.PSKIdentity, _, _ = x.str("psk_identity", false)
	if k, line, ok := x.str("psk", false); ok {
		sec, err := keys.ParseKey(k)
		if err != nil {
			x.d.addf(x.pos(line), "key \"psk\": %s", strings.TrimPrefix(err.Error(), "keys: "))
		}
		r.PSK = sec
	}
	r.CertFile, r.KeyFile, r.CAFile = x.file("cert_file"), x.file("key_file"), x.file("ca_file")
	if ps, line, ok := x.strs("pins", false); ok {
		for _, s := range ps {
			pin, err := keys.ParsePin(s)
			if err != nil {
				x.d.addf(x.pos(line), "key \"pins\": %q: %s", clip(s), strings.TrimPrefix(err.Error(), "keys: "))
				continue
			}
			r.Pins = append(r.Pins, pin)
		}
	}
	has := func(k string) bool { return x.e.byKey[k] != nil }
	psk := has("psk_identity") || has("psk")
	cert := has("cert_file") || has("key_file") || has("ca_file") || has("pins")
	switch {
	case !has("url") && (psk || cert):
		x.d.addf(x.e.pos, "%s: credentials need a coaps:// url (a device without url is reached where it last spoke from)", x.what())
	case r.URL == "" || r.Host == "":
	case !r.Secure && (psk || cert):
		x.d.addf(x.e.pos, "%s: credentials need a coaps:// url", x.what())
	case psk && cert:
		x.d.addf(x.e.pos, "%s: set either psk_identity and psk or cert_file and key_file, not both", x.what())
	case psk && (!has("psk_identity") || !has("psk")):
		x.d.addf(x.e.pos, "%s: psk_identity and psk go together", x.what())
	case cert && (!has("cert_file") || !has("key_file")):
		x.d.addf(x.e.pos, "%s: cert_file and key_file go together", x.what())
	case cert && !has("ca_file") && !has("pins"):
		// Without them no certificate of the device could be trusted.
		x.d.addf(x.e.pos, "%s: cert_file and key_file need ca_file or pins to verify the device's certificate", x.what())
	case r.Secure && !psk && !cert:
		x.d.addf(x.e.pos, "%s: a coaps:// device needs psk_identity and psk, or cert_file and key_file", x.what())
	}
	return r
}

// output reads the keys every CoAP → MQTT rule shares.
func (x *dec) output() Output {
	var o Output
	o.Topic = x.topic("topic", true, false)
	o.QoS = x.qos()
	o.Retain = x.boolean("retain")
	if s, line, ok := x.str("payload", false); ok {
		switch s {
		case "raw":
		case "json":
			o.Payload = PayloadJSON
		default:
			x.d.addf(x.pos(line), "key \"payload\": %q is not \"raw\" or \"json\"", s)
		}
	}
	if s, line, ok := x.str("where", false); ok {
		e, err := CompileWhere(s)
		switch {
		case err != nil:
			x.d.addf(x.pos(line), "key \"where\": %v", err)
		case e.alwaysFalse():
			x.d.addf(x.pos(line), "key \"where\": %q is always false: the rule would never fire; remove the rule or comment it out", s)
		}
		o.Where = e
	}
	if s, line, ok := x.str("transform", false); ok {
		e, err := CompileTransform(s)
		if err != nil {
			x.d.addf(x.pos(line), "key \"transform\": %v", err)
		}
		o.Transform = e
		if f := x.e.byKey["payload"]; f != nil && o.Payload == PayloadRaw && f.val.str == "raw" {
			x.d.addf(x.pos(line), "key \"transform\": needs payload = \"json\"")
		}
		// A transform produces JSON.
		o.Payload = PayloadJSON
	}
	return o
}

// identity reads identity = "{capture}" and checks the capture is bound.
func (x *dec) identity(path Pattern) string {
	s, line, ok := x.str("identity", false)
	if !ok {
		return ""
	}
	name, found := strings.CutPrefix(s, "{")
	name, closed := strings.CutSuffix(name, "}")
	if !found || !closed || !validName(name) {
		x.d.addf(x.pos(line), "key \"identity\": want a capture such as \"{device}\", got %q", clip(s))
		return ""
	}
	if !path.IsZero() && !path.Has(name) {
		x.d.addf(x.pos(line), "key \"identity\": {%s} is not a capture of path %q", name, path)
	}
	return name
}

func (x *dec) ingress() *Ingress {
	r := &Ingress{Pos: x.e.pos, hash: x.hash()}
	r.Name, _, _ = x.str("name", true)
	r.Path, _ = x.pattern("path", PathSyntax, true)
	r.Methods = []message.Code{message.POST, message.PUT}
	if ms, line, ok := x.strs("methods", false); ok {
		r.Methods = r.Methods[:0]
		for _, s := range ms {
			m, err := parseMethod(s)
			switch {
			case err != nil:
				x.d.addf(x.pos(line), "key \"methods\": %v", err)
			case m == message.GET || m == message.FETCH || m == message.DELETE:
				x.d.addf(x.pos(line), "key \"methods\": ingress takes POST, PUT, PATCH or iPATCH; serve %s with [[resource]] or [[command]]", m)
			default:
				r.Methods = append(r.Methods, m)
			}
		}
	}
	r.Output = x.output()
	r.Identity = x.identity(r.Path)
	r.ResourceTypes, r.Interfaces = x.linkAttr("rt"), x.linkAttr("if")
	return r
}

// devicePaths reads devices and paths of observe and poll rules.
func (x *dec) devicePaths(pathsRequired bool) (devices, paths []string) {
	devices, _, _ = x.strs("devices", true)
	ps, line, ok := x.strs("paths", pathsRequired)
	if !ok {
		return devices, nil
	}
	seen := map[string]bool{}
	for _, s := range ps {
		p, err := ParsePath(s)
		switch {
		case err != nil:
			x.d.addf(x.pos(line), "key \"paths\": %q: %s", clip(s), strings.TrimPrefix(err.Error(), "rules: "))
		case len(p.Captures()) > 0:
			x.d.addf(x.pos(line), "key \"paths\": %q: captures are not allowed in resource paths", clip(s))
		case seen[s]:
			x.d.addf(x.pos(line), "key \"paths\": %q listed twice", clip(s))
		default:
			seen[s] = true
			paths = append(paths, s)
		}
	}
	return devices, paths
}

func (x *dec) observe() *Observe {
	r := &Observe{Pos: x.e.pos, hash: x.hash()}
	r.Name, _, _ = x.str("name", true)
	hasPaths, hasDiscover := x.e.byKey["paths"] != nil, x.e.byKey["discover"] != nil
	if hasPaths == hasDiscover {
		x.d.addf(x.e.pos, "%s: set exactly one of \"paths\" and \"discover\"", x.what())
	}
	r.Devices, r.Paths = x.devicePaths(false)
	if q, line, ok := x.str("discover", false); ok {
		if !validDiscover(q) {
			x.d.addf(x.pos(line), "key \"discover\": %q is not a link-format query filter such as \"rt=temperature\"", clip(q))
		}
		r.Discover = q
	}
	r.CatalogTopic = x.catalogTopic(hasDiscover)
	r.Output = x.output()
	return r
}

// catalogTopic reads an observe rule's catalog_topic: a {device} template
// (ParseDeviceTopic), and only on a rule that reads /.well-known/core.
func (x *dec) catalogTopic(hasDiscover bool) Pattern {
	const key = "catalog_topic"
	f := x.e.byKey[key]
	if f == nil {
		return Pattern{}
	}
	if !hasDiscover {
		x.d.addf(x.pos(f.line), "key %q: needs \"discover\": the catalog is the device's /.well-known/core, which only a rule with discover reads", key)
		return Pattern{}
	}
	p := x.topic(key, false, false)
	if p.IsZero() {
		return p // reported
	}
	if err := p.checkDeviceTemplate(); err != nil {
		x.d.addf(x.pos(f.line), "key %q: %s", key, strings.TrimPrefix(err.Error(), "rules: "))
		return Pattern{}
	}
	return p
}

func (x *dec) poll() *Poll {
	r := &Poll{Pos: x.e.pos, hash: x.hash()}
	r.Name, _, _ = x.str("name", true)
	r.Devices, r.Paths = x.devicePaths(true)
	if d, ok := x.duration("interval", true); ok {
		if d < MinPollInterval {
			x.d.addf(x.pos(x.e.byKey["interval"].line), "key \"interval\": %s is below the %s minimum", d, MinPollInterval)
		}
		r.Interval = d
	}
	r.OnChange = x.boolean("on_change")
	r.Output = x.output()
	return r
}

func (x *dec) command() *Command {
	r := &Command{Pos: x.e.pos, hash: x.hash(), Timeout: DefaultCommandTimeout}
	r.Name, _, _ = x.str("name", true)
	r.Filter = x.topic("filter", true, true)
	if s, line, ok := x.str("method", true); ok {
		m, err := parseMethod(s)
		if err != nil {
			x.d.addf(x.pos(line), "key \"method\": %v", err)
		}
		r.Method = m
	}
	if s, line, ok := x.str("url", true); ok {
		u, err := ParseURLTemplate(s)
		if err != nil {
			x.d.addf(x.pos(line), "key \"url\": %s", strings.TrimPrefix(err.Error(), "rules: "))
		}
		r.URL = u
	}
	r.ResponseTopic = x.topic("response_topic", false, false)
	if d, ok := x.duration("timeout", false); ok {
		r.Timeout = d
	}
	if d, ok := x.duration("queue_ttl", false); ok {
		r.QueueTTL = d
	}
	r.QoS = x.qos()
	r.ContentFormat = x.contentFormat()
	return r
}

func (x *dec) resource() *Resource {
	r := &Resource{Pos: x.e.pos, hash: x.hash()}
	r.Name, _, _ = x.str("name", true)
	r.Path, _ = x.pattern("path", PathSyntax, true)
	r.Topic = x.topic("topic", true, true)
	r.Identity = x.identity(r.Path)
	r.ContentFormat = x.contentFormat()
	r.ResourceTypes, r.Interfaces = x.linkAttr("rt"), x.linkAttr("if")
	return r
}

// topic reads an MQTT topic pattern the bridge subscribes to (subscribed)
// or publishes to, and rejects the first levels that would make the rule
// never fire.
func (x *dec) topic(key string, required, subscribed bool) Pattern {
	p, ok := x.pattern(key, TopicSyntax, required)
	if !ok || len(p.segs) == 0 || p.segs[0].Kind != SegLiteral {
		return p
	}
	first, line := p.segs[0].Text, x.e.byKey[key].line
	switch {
	case strings.EqualFold(first, sharePrefix) && subscribed:
		// [MQTT-4.8.2] "$share/{group}/{filter}" delivers messages on the
		// topics of {filter}, which a rule's pattern, matched against the
		// delivered topic, never matches.
		plain := "a plain filter"
		if len(p.segs) > 2 {
			plain = fmt.Sprintf("the plain filter %q", strings.SplitN(p.raw, "/", 3)[2])
		}
		if key == "filter" { // a command rule's
			plain += " (bridges with the same [cluster] name share commands through the broker)"
		}
		x.d.addf(x.pos(line), "key %q: %q is a shared subscription, which rules do not take: the rule would never fire; write %s", key, p, plain)
	case strings.EqualFold(first, sharePrefix):
		x.d.addf(x.pos(line), "key %q: %q starts with %q, which brokers read as a shared subscription: no client could subscribe to it", key, p, first)
	case strings.EqualFold(first, sysPrefix) && !subscribed:
		// [MQTT-4.7.2] $SYS topics belong to the broker; mosquitto drops
		// other clients' publishes to them.
		x.d.addf(x.pos(line), "key %q: %q is under the broker's own %q topics; brokers drop clients' publishes there", key, p, first)
	}
	return p
}

// Topic prefixes the broker gives a meaning.
const (
	sharePrefix = "$share"
	sysPrefix   = "$SYS"
)

// parseMethod reads a method name as message.ParseMethod does (any case).
func parseMethod(s string) (message.Code, error) {
	if m, ok := message.ParseMethod(s); ok {
		return m, nil
	}
	return 0, fmt.Errorf("unknown method %q (want GET, POST, PUT, DELETE, FETCH, PATCH or iPATCH)", clip(s))
}

// ruleName returns the name used in cross-rule messages.
func ruleName(kind Kind, name string) string { return fmt.Sprintf("[[%s]] %q", kind, name) }
