package bridge

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/coap-mqtt/bridge/rules"
)

// inbound is one CoAP payload on its way to MQTT, from a device push, a
// notification or a poll.
type inbound struct {
	Payload       []byte
	ContentFormat int // -1 when the option is absent
	Path          string
	Device        string
	Identity      string
	Received      time.Time
	// Confirm says the sender waits for the outcome (a pushing device): a
	// QoS 1/2 message then counts as published only once the broker has
	// acknowledged it. Otherwise a message held in the offline buffer
	// counts as published; it is delivered on reconnect.
	Confirm bool
}

// outcomeError classifies why a CoAP → MQTT message was not published; the
// reason is the metric label and the code what a pushing device is told.
// The code is in the error chain, so coapside.Error answers with it.
type outcomeError struct {
	reason string
	code   message.Code
	err    error
}

func (e *outcomeError) Error() string   { return e.reason + ": " + e.err.Error() }
func (e *outcomeError) Unwrap() []error { return []error{e.code, e.err} }

// buildMessage turns an inbound payload into the MQTT message rule out
// publishes (rules.Output.Prepare: topic, where, conversion, transform). It
// returns errFiltered when where is false and an *outcomeError when the
// message cannot be published. tr, when not nil, records the steps.
func buildMessage(out *rules.Output, caps rules.Captures, in *inbound, tr *rules.Trace) (mqttside.Message, error) {
	p := rules.Payload{Data: in.Payload}
	if in.ContentFormat >= 0 {
		p.Format, p.HasFormat = message.MediaType(in.ContentFormat), true
	}
	caps = bindIdentity(caps, in.Identity)
	pub, keep, err := out.PrepareTrace(caps, rules.Message{Payload: p, Path: in.Path, Device: in.Device, Identity: in.Identity, Time: in.Received}, tr)
	switch {
	case err != nil:
		return mqttside.Message{}, classifyPrepareError(err)
	case !keep:
		// Where the message would have gone, for a dry run's report.
		return mqttside.Message{Topic: pub.Topic, QoS: pub.QoS, Retain: pub.Retain}, errFiltered
	}
	m := mqttside.Message{Topic: pub.Topic, Payload: pub.Payload, QoS: pub.QoS, Retain: pub.Retain}
	switch {
	case out.Payload == rules.PayloadJSON || out.Transform != nil:
		m.ContentType = "application/json"
	case p.HasFormat:
		m.ContentType = p.Format.String()
	}
	return m, nil
}

// classifyPrepareError maps a rule failure to a metric reason and the code a
// pushing device hears.
func classifyPrepareError(err error) error {
	switch {
	case errors.Is(err, rules.ErrConvert), errors.Is(err, rules.ErrContentFormat):
		return &outcomeError{reasonConvert, message.UnsupportedContentFormat, err}
	case errors.Is(err, rules.ErrExpr):
		return &outcomeError{reasonExpr, message.BadRequest, err}
	case errors.Is(err, rules.ErrNoIdentity):
		return &outcomeError{reasonIdentity, message.Unauthorized, err}
	}
	return &outcomeError{reasonEscape, message.BadRequest, err} // ErrEscape, ErrMissingCapture
}

// outputs publishes what devices send (pushes, notifications, poll
// answers) to MQTT by a rule's output settings, and counts the outcome.
type outputs struct {
	pub     publisher
	metrics *metrics
	log     *slog.Logger
	// publishTimeout bounds waiting for the broker to acknowledge a
	// message whose sender waits for the outcome; handoverTimeout bounds
	// handing any other message to the client (Options).
	publishTimeout, handoverTimeout time.Duration
}

// publish builds and publishes one message for a rule and records the
// result in the metrics. It returns nil once the message is certain to be
// published (see below), errFiltered, or an *outcomeError.
//
// A message whose sender waits for the outcome (in.Confirm, QoS 1/2) counts
// as published once the broker has acknowledged it, or once it was already
// handed to the MQTT connection, which resends it after a reconnect. If the
// broker takes neither in PublishTimeout it is withdrawn from the offline
// buffer, so a 5.03 always means "not published, send it again" and a
// retry cannot create a duplicate. Any other message counts as published
// once it is in the client or its offline buffer.
func (o *outputs) publish(ctx context.Context, rule string, out *rules.Output, caps rules.Captures, in *inbound) error {
	m, err := buildMessage(out, caps, in, nil)
	if err == nil {
		m.Origin = mqttside.Origin{Rule: rule, Device: in.Device}
		confirm := in.Confirm && m.QoS > 0
		timeout := o.publishTimeout
		if !confirm {
			// Taken into the client (or its offline buffer) is enough.
			timeout = min(timeout, o.handoverTimeout)
		}
		pctx, cancel := publishContext(ctx, o.pub, timeout)
		if confirm {
			err = o.pub.PublishOrWithdraw(pctx, m)
		} else {
			err = o.pub.Publish(pctx, m)
		}
		cancel()
		if errors.Is(err, mqttside.ErrPending) {
			// Accepted and not withdrawable: it is delivered on reconnect.
			o.metrics.buffered.WithLabelValues(rule).Inc()
			err = nil
		}
		if err != nil {
			err = classifyPublishError(err)
		}
	}
	var oe *outcomeError
	switch {
	case err == nil:
		o.metrics.messages.WithLabelValues(rule, dirCoAPToMQTT).Inc()
		o.metrics.latency.WithLabelValues(rule, dirCoAPToMQTT).Observe(time.Since(in.Received).Seconds())
		o.metrics.devices.message(in.Device, dirCoAPToMQTT, in.Received)
	case errors.Is(err, errFiltered):
		o.metrics.filtered.WithLabelValues(rule).Inc()
	case errors.As(err, &oe):
		o.metrics.ruleError(rule, oe.reason, errorDetail{device: in.Device, code: oe.code, err: oe.err})
		o.log.Warn("message not published", "rule", rule, "path", in.Path, "device", in.Device, "reason", oe.reason, "err", oe.err)
	}
	return err
}

// dropped hears of a message accepted (counted as carried, a push answered
// 2.04) that the MQTT client dropped later: a QoS 0 message evicted from the
// full offline buffer by a newer message. It is an error of its rule.
func (o *outputs) dropped(m mqttside.Message, err error) {
	o.metrics.ruleError(m.Origin.Rule, reasonBufferFull, errorDetail{device: m.Origin.Device, err: err})
	o.log.Warn("message dropped from the offline buffer", "rule", m.Origin.Rule, "device", m.Origin.Device, "topic", m.Topic, "reason", reasonBufferFull, "err", err)
}

// classifyPublishError maps an mqttside error to an outcome: the broker
// could not take the message now (5.03, the device retries) or the message
// itself is unacceptable (4.xx).
func classifyPublishError(err error) error {
	switch {
	case errors.Is(err, mqttside.ErrBufferFull):
		return &outcomeError{reasonBufferFull, message.ServiceUnavailable, err}
	case errors.Is(err, mqttside.ErrWithdrawn), errors.Is(err, context.DeadlineExceeded):
		return &outcomeError{reasonPublishTimeout, message.ServiceUnavailable, err}
	case errors.Is(err, mqttside.ErrInvalidTopic):
		return &outcomeError{reasonEscape, message.BadRequest, err}
	case errors.Is(err, mqttside.ErrPayloadTooLarge):
		return &outcomeError{reasonPublish, message.RequestEntityTooLarge, err}
	}
	return &outcomeError{reasonPublish, message.ServiceUnavailable, err}
}
