package rules

import (
	"fmt"
	"time"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// Kind names a section of a rule file.
type Kind string

// Rule kinds, as the section names in rule files.
const (
	KindDevice   Kind = "device"
	KindIngress  Kind = "ingress"
	KindObserve  Kind = "observe"
	KindPoll     Kind = "poll"
	KindCommand  Kind = "command"
	KindResource Kind = "resource"
	// KindPSK is not a rule: pre-shared keys of the coaps listener are in
	// the psk_file (keys.ParsePSKFile), and a [[psk]] in a rule file is an
	// error that says so.
	KindPSK Kind = "psk"
)

// Hash identifies the content of a rule as written: two rules with equal
// hashes were written with the same keys and values.
type Hash [32]byte

// PayloadMode says how a CoAP payload is published to MQTT.
type PayloadMode uint8

// Payload modes.
const (
	// PayloadRaw publishes the bytes as received.
	PayloadRaw PayloadMode = iota
	// PayloadJSON converts by Content-Format to JSON (see ToJSON).
	PayloadJSON
)

// String returns "raw" or "json".
func (m PayloadMode) String() string {
	if m == PayloadJSON {
		return "json"
	}
	return "raw"
}

// Device is a registry entry: a name usable as a host in rules.
type Device struct {
	Name string
	// URL is the address as written, e.g. "coaps://10.0.0.7:5684".
	URL string
	// Secure is true for coaps (DTLS, RFC 7252 §9.1).
	Secure bool
	// Host is host:port, with the default port (5683, or 5684 for coaps)
	// filled in (RFC 7252 §6.1, §6.2).
	Host string
	// Options are the Uri-Host and Uri-Port options a request to the
	// device carries (RFC 7252 §6.4), from url.
	Options message.Options
	// PSKIdentity and PSK, or CertFile and KeyFile with CAFile and/or Pins,
	// are the device's DTLS trust (coaps only): the bridge builds its
	// credentials from them with dtls.LoadCredentials.
	PSKIdentity string
	PSK         keys.Secret
	// CertFile, KeyFile and CAFile are resolved against the rule file's
	// directory.
	CertFile string
	KeyFile  string
	CAFile   string
	// Pins accept the device's certificate by its public key.
	Pins []keys.Pin
	Pos  Pos
	hash Hash
}

// Output is what every CoAP → MQTT rule shares: where and how to publish.
type Output struct {
	Topic   Pattern
	QoS     byte
	Retain  bool
	Payload PayloadMode
	// Where, when set, drops messages for which it is false.
	Where *Expr
	// Transform, when set, replaces the JSON payload with its result.
	Transform *Expr
}

// Ingress accepts CoAP requests from devices on the bridge's server and
// publishes them. Its topic may use the path's captures and {identity}, which
// the bridge binds (Captures.With) to the authenticated DTLS identity before
// calling Prepare.
type Ingress struct {
	Name    string
	Path    Pattern
	Methods []message.Code
	// Identity, when set, is the capture whose value must equal the
	// authenticated DTLS identity ("identity = \"{device}\"").
	Identity string
	// ResourceTypes and Interfaces are the rt and if attributes that
	// describe the rule on /.well-known/core (RFC 6690 §3.1, §3.2); an
	// ingress rule is listed there only when it has one of them.
	ResourceTypes []string
	Interfaces    []string
	Output
	Pos  Pos
	hash Hash
}

// Observe keeps RFC 7641 observations on device resources and publishes
// every notification.
type Observe struct {
	Name    string
	Devices []string
	// Paths are absolute resource paths; empty when Discover is used.
	Paths []string
	// Discover is a link-format query (RFC 6690 §4.1), e.g. "rt=temperature",
	// selecting resources from /.well-known/core.
	Discover string
	// CatalogTopic, when set (only with Discover), is the {device} topic
	// template of the device's catalog: the whole /.well-known/core as a
	// retained JSON document, published whenever a read finds it changed.
	CatalogTopic Pattern
	Output
	Pos  Pos
	hash Hash
}

// Poll GETs device resources periodically and publishes the responses.
type Poll struct {
	Name     string
	Devices  []string
	Paths    []string
	Interval time.Duration
	// OnChange publishes only when the payload differs from the last one.
	OnChange bool
	Output
	Pos  Pos
	hash Hash
}

// DefaultCommandTimeout bounds a command's CoAP exchange when the rule sets
// no timeout.
const DefaultCommandTimeout = 30 * time.Second

// Command turns MQTT publishes on Filter into CoAP requests.
type Command struct {
	Name   string
	Filter Pattern
	Method message.Code
	URL    URLTemplate
	// ResponseTopic, when set, receives the device's response.
	ResponseTopic Pattern
	Timeout       time.Duration
	// QueueTTL, when set, bounds how long a command waits in a sleeping
	// or offline device's queue (devices.queue_ttl otherwise).
	QueueTTL time.Duration
	// QoS is used to publish the response.
	QoS byte
	// ContentFormat, when set, is sent with the request; CBOR converts the
	// MQTT JSON payload to CBOR (see JSONToCBOR).
	ContentFormat *message.MediaType
	Pos           Pos
	hash          Hash
}

// Resource serves an MQTT topic as a CoAP resource: GET returns the latest
// message, Observe streams new ones. Its topic may use the path's captures
// and {identity}, bound as for Ingress.
type Resource struct {
	Name  string
	Path  Pattern
	Topic Pattern
	// Identity is as for Ingress.
	Identity string
	// ContentFormat, when set, is announced to CoAP clients.
	ContentFormat *message.MediaType
	// ResourceTypes and Interfaces are the rt and if attributes of the
	// rule's paths on /.well-known/core (RFC 6690 §3.1, §3.2).
	ResourceTypes []string
	Interfaces    []string
	Pos           Pos
	hash          Hash
}

// CheckIdentity enforces identity = "{capture}": the captured value must equal
// the authenticated identity. Rules without the key accept any identity.
func checkIdentity(capture string, caps Captures, identity string) error {
	if capture == "" {
		return nil
	}
	v, _ := caps.Get(capture)
	if identity == "" || v != identity {
		return fmt.Errorf("%w: {%s} is %q, identity is %q", ErrIdentity, capture, v, identity)
	}
	return nil
}

// CheckIdentity reports, wrapping ErrIdentity, whether the request's
// authenticated identity is not the one the rule requires.
func (r *Ingress) CheckIdentity(caps Captures, identity string) error {
	return checkIdentity(r.Identity, caps, identity)
}

// CheckIdentity is as for Ingress.
func (r *Resource) CheckIdentity(caps Captures, identity string) error {
	return checkIdentity(r.Identity, caps, identity)
}

// Allows reports whether the ingress rule accepts the method.
func (r *Ingress) Allows(m message.Code) bool {
	for _, x := range r.Methods {
		if x == m {
			return true
		}
	}
	return false
}
