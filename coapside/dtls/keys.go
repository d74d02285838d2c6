package dtls

import "github.com/coap-mqtt/bridge/coapside/dtls/keys"

// Secret is the key material of a pre-shared key; it never prints (see
// keys.Secret). Parse key syntax with keys.ParseKey.
type Secret = keys.Secret

// Pin is an SPKI pin (see keys.Pin); keys.ParsePin parses one and
// keys.PinOf computes one from a certificate.
type Pin = keys.Pin

// MaxIdentityLen bounds a PSK identity (see keys.MaxIdentityLen).
const MaxIdentityLen = keys.MaxIdentityLen
