package rules

import (
	"encoding/json"
	"fmt"
	"time"
)

// Message is a CoAP payload on its way to MQTT, with what expressions may
// ask about it.
type Message struct {
	Payload Payload
	// Path is the CoAP path, with a leading '/'.
	Path string
	// Device is the device name, when known.
	Device string
	// Identity is the authenticated DTLS identity, when any.
	Identity string
	// Time is when the bridge received the message.
	Time time.Time
}

// Publication is what the bridge publishes for a message.
type Publication struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// Trace records the steps of one Prepare for a dry run (bridge route):
// what where and transform saw and decided. The zero value is ready.
type Trace struct {
	// Decoded is the payload as expressions see it (see Decode); set
	// only when the rule has where or transform.
	Decoded any
	// WhereRan is set when where was evaluated; Where is its verdict.
	WhereRan, Where bool
	// TransformRan is set when transform ran; Transformed is its result.
	TransformRan bool
	Transformed  any
}

// Prepare applies a CoAP → MQTT rule to one message: it renders the topic
// from the captures, evaluates where (keep is false when it drops the
// message), converts the payload and applies transform. Failures wrap
// ErrEscape, ErrMissingCapture, ErrConvert, ErrContentFormat or ErrExpr;
// the caller counts and logs them.
func (o *Output) Prepare(caps Captures, m Message) (pub Publication, keep bool, err error) {
	return o.PrepareTrace(caps, m, nil)
}

// PrepareTrace is Prepare recording its steps in tr (nil records nothing).
func (o *Output) PrepareTrace(caps Captures, m Message, tr *Trace) (pub Publication, keep bool, err error) {
	topic, err := o.Topic.Render(caps)
	if err != nil {
		return pub, false, err
	}
	pub = Publication{Topic: topic, QoS: o.QoS, Retain: o.Retain, Payload: m.Payload.Data}
	if o.Where == nil && o.Transform == nil {
		if o.Payload == PayloadJSON {
			if pub.Payload, err = ToJSON(m.Payload, m.Time); err != nil {
				return pub, false, err
			}
		}
		return pub, true, nil
	}
	v, err := Decode(m.Payload, m.Time)
	if err != nil {
		return pub, false, err
	}
	if tr != nil {
		tr.Decoded = v
	}
	cf := -1
	if m.Payload.HasFormat {
		cf = int(m.Payload.Format)
	}
	env := &Env{
		Payload:       v,
		Captures:      caps.Map(),
		Topic:         topic,
		Path:          m.Path,
		ContentFormat: cf,
		Device:        m.Device,
		Identity:      m.Identity,
		Timestamp:     m.Time,
	}
	if o.Where != nil {
		ok, err := o.Where.Match(env)
		if tr != nil && err == nil {
			tr.WhereRan, tr.Where = true, ok
		}
		if err != nil || !ok {
			return pub, false, err
		}
	}
	switch {
	case o.Transform != nil:
		out, err := o.Transform.Run(env)
		if err != nil {
			return pub, false, err
		}
		if tr != nil {
			tr.TransformRan, tr.Transformed = true, out
		}
		if pub.Payload, err = json.Marshal(out); err != nil {
			return pub, false, fmt.Errorf("%w: transform result: %v", ErrExpr, err)
		}
	case o.Payload == PayloadJSON:
		if pub.Payload, err = ToJSON(m.Payload, m.Time); err != nil {
			return pub, false, err
		}
	}
	return pub, true, nil
}
