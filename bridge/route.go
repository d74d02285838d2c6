package bridge

import (
	"errors"
	"fmt"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// This file holds the routing decisions the bridge takes from its rules
// alone, before any I/O: the CoAP server's dispatch (decideCoAP), a push's
// inbound message (pushInbound, then buildMessage), a resource rule's
// topic (readTopic) and a command's target and request (planCommand,
// commandRequest). The running bridge and Router, the dry run behind
// "bridge route", both call them.

// coapAction is what the CoAP server does with a request.
type coapAction uint8

const (
	// actRefuse answers with coapDecision.code.
	actRefuse coapAction = iota
	// actDiscovery answers GET /.well-known/core (RFC 6690 §4).
	actDiscovery
	// actIngress publishes a device's push by an ingress rule.
	actIngress
	// actResource answers with the latest message of a resource rule's topic.
	actResource
	// actProxy passes the request to a device by a proxy rule's url.
	actProxy
)

// coapDecision is the CoAP server's dispatch of one request.
type coapDecision struct {
	action coapAction
	route  *rules.Route // set for actIngress, actResource, actProxy and an identity refusal
	caps   rules.Captures
	code   message.Code // actRefuse: the answer
	reason string       // actRefuse: the bridge_rule_errors_total reason; "" is not counted
	err    error        // actRefuse: why, when there is more to say than the code
}

// decideCoAP dispatches a request to the bridge's CoAP server by the rule
// set: method m on Uri-Path segs from a client with the authenticated
// identity ("" for plain CoAP).
func decideCoAP(set *rules.Set, m message.Code, segs []string, identity string) coapDecision {
	if !m.IsRequest() {
		return coapDecision{code: message.MethodNotAllowed}
	}
	if isWellKnownCore(segs) {
		if m != message.GET {
			return coapDecision{code: message.MethodNotAllowed}
		}
		return coapDecision{action: actDiscovery}
	}
	route, caps, err := set.MatchPath(m, segs, nil)
	switch {
	case errors.Is(err, rules.ErrMethodNotAllowed):
		return coapDecision{code: message.MethodNotAllowed, reason: reasonMethod, err: err}
	case errors.Is(err, rules.ErrEscape):
		// A captured segment that would change the topic's levels; an
		// error of the rule whose path took it.
		return coapDecision{route: route, code: message.BadRequest, reason: reasonEscape, err: err}
	case err != nil:
		return coapDecision{code: message.NotFound, reason: reasonNoRoute, err: err}
	}
	switch {
	case route.Proxy != nil:
		return coapDecision{action: actProxy, route: route, caps: caps}
	case route.Ingress != nil:
		err = route.Ingress.CheckIdentity(caps, identity)
	default:
		err = route.Resource.CheckIdentity(caps, identity)
	}
	if err != nil {
		d := coapDecision{route: route, caps: caps, code: message.Forbidden, reason: reasonIdentity, err: err}
		if identity == "" {
			d.code = message.Unauthorized // RFC 7252 §5.9.2.2
		}
		return d
	}
	if route.Ingress != nil {
		return coapDecision{action: actIngress, route: route, caps: caps}
	}
	return coapDecision{action: actResource, route: route, caps: caps}
}

// pushInbound is a device's push on its way to MQTT: cf is the
// Content-Format option (-1 when absent).
func pushInbound(payload []byte, cf int, path, identity string, caps rules.Captures, received time.Time) *inbound {
	msg := &inbound{
		Payload:       payload,
		ContentFormat: cf,
		Path:          path,
		Identity:      identity,
		Received:      received,
		Confirm:       true,
	}
	if d, ok := caps.Get("device"); ok {
		msg.Device = d
	}
	return msg
}

// bindIdentity binds {identity} to the authenticated identity, for the
// topics of ingress and resource rules.
func bindIdentity(caps rules.Captures, identity string) rules.Captures {
	if identity == "" {
		return caps
	}
	return caps.With("identity", identity)
}

// readTopic is the topic a GET on a resource rule reads: 4.05 for any
// other method, an *outcomeError (4.00, escape) when a capture cannot be
// a topic level.
func readTopic(rule *rules.Resource, m message.Code, caps rules.Captures) (string, error) {
	if m != message.GET {
		return "", message.MethodNotAllowed
	}
	topic, err := rule.Topic.Render(caps)
	if errors.Is(err, rules.ErrNoIdentity) {
		return "", &outcomeError{reasonIdentity, message.Unauthorized, err}
	}
	if err != nil {
		return "", &outcomeError{reasonEscape, message.BadRequest, err}
	}
	return topic, nil
}

// planCommand checks a command's payload against the MQTT payload limit
// and renders its target. On failure it returns the reason to count
// and the error to answer on the response topic.
func planCommand(set *rules.Set, rule *rules.Command, caps rules.Captures, payload []byte, limit int) (rules.Target, string, error) {
	if len(payload) > limit {
		// A remote broker delivers whatever it accepted; the embedded
		// broker refuses such a publish itself.
		return rules.Target{}, reasonTooLarge, fmt.Errorf("payload of %d bytes exceeds mqtt.max_payload (%d)", len(payload), limit)
	}
	target, err := set.Target(rule, caps)
	if err != nil {
		reason := reasonEscape
		switch {
		case errors.Is(err, rules.ErrUnknownDevice):
			reason = reasonUnknownDevice
		case errors.Is(err, coapside.ErrInvalidURL):
			reason = reasonConvert // a segment too long for a Uri-Path option
		}
		return rules.Target{}, reason, err
	}
	return target, "", nil
}

// commandRequest builds the CoAP request for a command from its target:
// the address and Uri-* options rendered once (rules.Set.Target), the
// method, and the payload with its Content-Format (JSON converted for
// cbor).
func commandRequest(rule *rules.Command, target rules.Target, payload []byte) (*coapside.Request, error) {
	opts := target.Options
	if cf := rule.ContentFormat; cf != nil {
		if *cf == message.AppCBOR {
			p, err := rules.JSONToCBOR(payload)
			if err != nil {
				return nil, err
			}
			payload = p
		}
		opts = opts.SetContentFormat(*cf)
	}
	return &coapside.Request{
		Method:  rule.Method,
		Type:    message.Confirmable,
		Options: opts,
		Payload: payload,
		URL:     target.URL(),
	}, nil
}

// codeOf returns the CoAP code in err's chain, or 5.00.
func codeOf(err error) message.Code {
	var c message.Code
	if errors.As(err, &c) {
		return c
	}
	return message.InternalServerError
}

// outcomeReason returns the metric reason of an *outcomeError, or "".
func outcomeReason(err error) string {
	var oe *outcomeError
	if errors.As(err, &oe) {
		return oe.reason
	}
	return ""
}
