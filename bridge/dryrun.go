package bridge

import (
	"errors"
	"fmt"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
)

// nearest is how many candidate rules a route that matched none lists.
const nearest = 3

// Router answers, without sockets, what the bridge would do with a CoAP
// request to its server or an MQTT publish on a command topic: the
// running bridge's own decisions (see route.go) over the rules and config
// that bridge run would load. It is what "bridge route" prints.
type Router struct {
	set        *rules.Set
	maxPayload int  // mqtt.max_payload
	emptyLevel bool // the MQTT client takes topics with empty levels
}

// NewRouter validates cfg and loads its rules as Check does.
func NewRouter(cfg Config) (*Router, error) {
	set, err := checkedRules(cfg)
	if err != nil {
		return nil, err
	}
	o := mqttOptions(cfg.MQTT, nil, nil)
	return &Router{set: set, maxPayload: maxPayload(cfg.MQTT), emptyLevel: o.AllowEmptyLevels}, nil
}

// Rules returns the loaded rule set.
func (rt *Router) Rules() *rules.Set { return rt.set }

// CoAPProbe is a request to the bridge's CoAP server.
type CoAPProbe struct {
	Method message.Code
	// Path holds the Uri-Path option values.
	Path    []string
	Payload []byte
	// ContentFormat is the Content-Format option, -1 when absent.
	ContentFormat int
	// Identity is the client's authenticated DTLS identity ("" for coap).
	Identity string
	// Received is the receive time expressions see as timestamp.
	Received time.Time
}

// CoAPAction names what the bridge's CoAP server does with a request.
type CoAPAction string

// CoAP actions.
const (
	// CoAPRefused: answered with an error code; nothing is published.
	CoAPRefused CoAPAction = "refused"
	// CoAPDiscovery: GET /.well-known/core, answered with the link-format
	// list of the bridge's resources (RFC 6690).
	CoAPDiscovery CoAPAction = "discovery"
	// CoAPPublish: an ingress rule publishes the payload to MQTT.
	CoAPPublish CoAPAction = "publish"
	// CoAPFiltered: an ingress rule took the request but its where was
	// false; the device hears 2.04 and nothing is published.
	CoAPFiltered CoAPAction = "filtered"
	// CoAPRead: a resource rule answers with the latest message on a
	// topic (4.04 until one was published there).
	CoAPRead CoAPAction = "read"
	// CoAPProxy: a proxy rule passes the request to a device (answered
	// from the cache while a fresh response is held).
	CoAPProxy CoAPAction = "proxy"
)

// CoAPRoute is what the bridge does with a CoAPProbe.
type CoAPRoute struct {
	Action CoAPAction
	// Code is what the client hears: 2.04 for a push taken, 2.05 for a
	// read (when the topic holds a message) or discovery, else the error.
	Code message.Code
	// Rule is the ingress or resource rule that took the request; for an
	// identity refusal the rule that refused it.
	Rule     *rules.Route
	Captures rules.Captures
	// Reason is the bridge_rule_errors_total reason counted for a refusal
	// ("" when none is counted); Err says why.
	Reason string
	Err    error
	// Candidates are the nearest rules when none took the path or method.
	Candidates []rules.Candidate
	// Message is what an ingress rule publishes; Trace what its where and
	// transform saw and decided.
	Message mqttside.Message
	Trace   rules.Trace
	// Topic is the topic a resource rule reads.
	Topic string
	// Target is the device resource a proxy rule passes the request to.
	Target rules.Target
}

// Routed reports whether the request goes through: published, read or
// answered by discovery.
func (r *CoAPRoute) Routed() bool {
	return r.Action == CoAPPublish || r.Action == CoAPRead || r.Action == CoAPDiscovery || r.Action == CoAPProxy
}

// CoAP routes a request as the bridge's CoAP server does.
func (rt *Router) CoAP(p CoAPProbe) CoAPRoute {
	d := decideCoAP(rt.set, p.Method, p.Path, p.Identity)
	res := CoAPRoute{Action: CoAPRefused, Rule: d.route, Captures: d.caps, Code: d.code, Reason: d.reason, Err: d.err}
	switch d.action {
	case actRefuse:
		if errors.Is(d.err, rules.ErrNoRoute) || errors.Is(d.err, rules.ErrMethodNotAllowed) {
			res.Candidates = rt.set.NearestRoutes(p.Method, p.Path, nearest)
		}
	case actDiscovery:
		res.Action, res.Code = CoAPDiscovery, message.Content
	case actResource:
		topic, err := readTopic(d.route.Resource, p.Method, bindIdentity(d.caps, p.Identity))
		if err != nil {
			res.Code, res.Reason, res.Err = codeOf(err), outcomeReason(err), err
			break
		}
		res.Action, res.Code, res.Topic = CoAPRead, message.Content, topic
	case actProxy:
		t, err := rt.set.ProxyTarget(d.route.Proxy, d.caps)
		if err != nil {
			res.Code, res.Reason, res.Err = proxyError(err), proxyReason(err), err
			break
		}
		res.Action, res.Target = CoAPProxy, t
	case actIngress:
		if len(p.Payload) > rt.maxPayload {
			// The server refuses it before any rule sees it: at its first
			// block (or whole, past the datagram size).
			res.Code = message.RequestEntityTooLarge
			res.Err = fmt.Errorf("%d bytes, over mqtt.max_payload (%d): answered 4.13 with Size1 %d at the first block, counted in bridge_coap_limit_hits_total{limit=\"block1_size\"}",
				len(p.Payload), rt.maxPayload, rt.maxPayload)
			break
		}
		rule := d.route.Ingress
		in := pushInbound(p.Payload, p.ContentFormat, uriPath(p.Path), p.Identity, d.caps, p.Received)
		m, err := buildMessage(&rule.Output, d.caps, in, &res.Trace)
		if err == nil {
			if verr := mqttside.ValidateMessage(m, rt.maxPayload, rt.emptyLevel); verr != nil {
				err = classifyPublishError(verr)
			}
		}
		res.Message = m
		switch {
		case err == nil:
			res.Action, res.Code = CoAPPublish, message.Changed
		case errors.Is(err, errFiltered):
			res.Action, res.Code = CoAPFiltered, message.Changed
		default:
			res.Code, res.Reason, res.Err = codeOf(err), outcomeReason(err), err
		}
	}
	return res
}

// MQTTRoute is what the bridge does with a publish on a command topic.
type MQTTRoute struct {
	// Rule is the command rule matching the topic, nil when none does.
	Rule     *rules.Command
	Captures rules.Captures
	// Target is where the command goes; Target.Learned means the address
	// is the one the device last spoke from, known only at run time.
	Target rules.Target
	// Request is the CoAP request sent (method, options, payload, URL).
	Request *coapside.Request
	// ResponseTopic is where the outcome is published ("" when the rule
	// sets no response_topic).
	ResponseTopic string
	// Reason is the bridge_rule_errors_total reason of a command the
	// bridge refuses before sending it; Err says why.
	Reason string
	Err    error
	// Candidates are the nearest command rules when none matches.
	Candidates []rules.Candidate
	// Subscribed is set when a command rule's filter takes the topic, so
	// the bridge receives the message (a command topic one level short of
	// a {name...} does, and is counted as no_route).
	Subscribed bool
	// Resources are the resource rules keeping the message for CoAP
	// clients, with the captures their paths are rendered from.
	Resources []rules.ResourceMatch
}

// Routed reports whether the message is used: sent to a device as a
// command or, when no command rule matches, kept by a resource rule.
func (r *MQTTRoute) Routed() bool {
	return r.Request != nil || (r.Rule == nil && len(r.Resources) > 0 && r.Err == nil)
}

// MQTT routes a publish on topic as the bridge's command and resource
// rules do.
func (rt *Router) MQTT(topic string, payload []byte) MQTTRoute {
	res := MQTTRoute{Resources: rt.set.MatchResources(topic)}
	for _, c := range rt.set.Commands {
		if _, ok := c.Filter.MatchTopic(topic, nil); ok {
			res.Subscribed = true
			break
		}
	}
	rule, caps, ok := rt.set.MatchCommand(topic, nil)
	if !ok {
		switch {
		case len(res.Resources) == 0:
			res.Err = rules.ErrNoRoute
			res.Candidates = rt.set.NearestCommands(topic, nearest)
		case len(payload) > rt.maxPayload:
			res.Err = fmt.Errorf("%w: %d bytes, over mqtt.max_payload (%d): the embedded broker refuses the publish, and from a remote broker a resource rule does not keep it",
				mqttside.ErrPayloadTooLarge, len(payload), rt.maxPayload)
		}
		if res.Subscribed {
			res.Reason = reasonNoRoute
		}
		return res
	}
	res.Rule, res.Captures = rule, caps
	if !rule.ResponseTopic.IsZero() {
		// An error in it is the bridge's to log; the command still goes.
		res.ResponseTopic, _ = replyTopic(rule.ResponseTopic, caps)
	}
	target, reason, err := planCommand(rt.set, rule, caps, payload, rt.maxPayload)
	if err != nil {
		res.Reason, res.Err = reason, err
		return res
	}
	res.Target = target
	req, err := commandRequest(rule, target, payload)
	if err != nil {
		res.Reason, res.Err = reasonConvert, err
		return res
	}
	res.Request = req
	return res
}

// uriPath is the path of Uri-Path values as a request's Path reports it.
func uriPath(segs []string) string {
	var o message.Options
	for _, s := range segs {
		o = o.AddString(message.URIPath, s)
	}
	return o.Path()
}
