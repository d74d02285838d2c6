package mqttside

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
)

// Defaults applied by SetDefaults.
const (
	DefaultClientID       = "coap-bridge"
	DefaultBufferSize     = 1000
	DefaultMaxInflight    = 256
	DefaultMaxPayload     = 256 * 1024
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultMinBackoff     = 500 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	DefaultEmbeddedListen = ":1883"
	DefaultSysInterval    = 10 * time.Second
	// BrokerEmbedded selects the embedded broker in Options.Broker.
	BrokerEmbedded = "embedded"
)

// Options mirrors the [mqtt] config section. Broker "embedded" (or "")
// selects [Embedded], anything else is the URL of a remote broker.
type Options struct {
	Broker   string
	ClientID string
	Username string
	Password keys.Secret
	TLS      TLSOptions
	// BufferSize bounds the offline buffer (remote) in messages.
	BufferSize int
	// MaxPayload bounds published payloads in bytes.
	MaxPayload int
	// AllowEmptyLevels permits publishing to topics with empty levels.
	AllowEmptyLevels bool
	// StatusTopic is the retained online/offline topic (remote only);
	// "" means "{client_id}/status". "-" disables it.
	StatusTopic string
	// KeepAlive is the remote connection's keepalive; 0 means
	// DefaultKeepAlive.
	KeepAlive time.Duration
	Embedded  EmbeddedOptions

	Logger  *slog.Logger
	OnEvent EventFunc
	// OnDropped hears of accepted messages dropped before the broker
	// (remote only: the embedded broker takes a message at once).
	OnDropped DroppedFunc
}

// New returns the client Options.Broker selects, not yet started.
func New(o Options) (Client, error) {
	if o.Broker == "" || o.Broker == BrokerEmbedded {
		e := o.Embedded
		if e.MaxPayload == 0 {
			e.MaxPayload = o.MaxPayload
		}
		if e.Logger == nil {
			e.Logger = o.Logger
		}
		if e.OnEvent == nil {
			e.OnEvent = o.OnEvent
		}
		e.AllowEmptyLevels = e.AllowEmptyLevels || o.AllowEmptyLevels
		return NewEmbedded(e)
	}
	return NewRemote(RemoteOptions{
		Broker:      o.Broker,
		ClientID:    o.ClientID,
		Username:    o.Username,
		Password:    o.Password,
		TLS:         o.TLS,
		BufferSize:  o.BufferSize,
		MaxPayload:  o.MaxPayload,
		StatusTopic: o.StatusTopic,
		KeepAlive:   o.KeepAlive,
		Logger:      o.Logger,
		OnEvent:     o.OnEvent,
		OnDropped:   o.OnDropped,

		AllowEmptyLevels: o.AllowEmptyLevels,
	})
}

// TLSOptions configures TLS to a remote broker (ssl://, tls://, mqtts://, wss://).
type TLSOptions struct {
	CAFile     string // PEM CA bundle; empty uses the system roots
	CertFile   string // PEM client certificate, with KeyFile
	KeyFile    string // PEM client key, with CertFile
	ServerName string // overrides the host name checked in the certificate
	// InsecureSkipVerify disables certificate checks. Tests only.
	InsecureSkipVerify bool
}

// RemoteOptions configures [Remote].
type RemoteOptions struct {
	// Broker is tcp://, mqtt://, ssl://, tls://, mqtts://, ws:// or wss://
	// host:port. A missing port defaults to 1883, 8883, 80 or 443.
	Broker   string
	ClientID string
	Username string
	Password keys.Secret
	TLS      TLSOptions

	BufferSize  int // offline buffer, messages
	MaxInflight int // messages handed to the connection awaiting acknowledgement
	MaxPayload  int // bytes
	// AllowEmptyLevels permits publishing to topics with empty levels.
	AllowEmptyLevels bool

	KeepAlive      time.Duration
	ConnectTimeout time.Duration
	// MinBackoff is the delay before the first retry, after a failed
	// attempt or a lost connection; each retry doubles the delay up to
	// MaxBackoff (with up to a quarter less as jitter). So the client is
	// connected again at most MaxBackoff after the broker is back. A
	// connection that stayed up for MaxBackoff resets the delay to
	// MinBackoff; after one that dropped sooner it keeps growing.
	MinBackoff time.Duration
	MaxBackoff time.Duration

	// StatusTopic is the retained status topic: "online" after each
	// connect, "offline" on Close and as Last Will. "" means
	// "{client_id}/status"; "-" disables it.
	StatusTopic string

	Logger  *slog.Logger
	OnEvent EventFunc
	// OnDropped hears of accepted messages dropped from the offline
	// buffer (see DroppedFunc).
	OnDropped DroppedFunc
}

// SetDefaults fills zero fields.
func (o *RemoteOptions) SetDefaults() {
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	if o.BufferSize == 0 {
		o.BufferSize = DefaultBufferSize
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.StatusTopic == "" {
		o.StatusTopic = o.ClientID + "/status"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports unusable options.
func (o *RemoteOptions) Validate() error {
	if _, err := brokerURL(o.Broker); err != nil {
		return err
	}
	switch {
	case o.BufferSize < 1:
		return fmt.Errorf("%w: buffer size %d must be positive", ErrInvalidOptions, o.BufferSize)
	case o.MaxInflight < 1 || o.MaxInflight > 65535:
		return fmt.Errorf("%w: max inflight %d out of 1..65535", ErrInvalidOptions, o.MaxInflight)
	case o.MaxPayload < 1 || o.MaxPayload > 268435455-2-MaxTopicLength:
		// [MQTT-2.2.3] remaining length is at most 268,435,455 bytes.
		return fmt.Errorf("%w: max payload %d out of range", ErrInvalidOptions, o.MaxPayload)
	case o.MinBackoff <= 0 || o.MaxBackoff < o.MinBackoff:
		return fmt.Errorf("%w: backoff %v..%v", ErrInvalidOptions, o.MinBackoff, o.MaxBackoff)
	case (o.TLS.CertFile == "") != (o.TLS.KeyFile == ""):
		return fmt.Errorf("%w: tls cert_file and key_file must be given together", ErrInvalidOptions)
	case len(o.ClientID) > 65535 || o.ClientID == "":
		return fmt.Errorf("%w: client id length %d", ErrInvalidOptions, len(o.ClientID))
	}
	if o.StatusTopic != "-" {
		if err := ValidateTopic(o.StatusTopic); err != nil {
			return fmt.Errorf("%w: status topic: %w", ErrInvalidOptions, err)
		}
	}
	return nil
}

// ParseBrokerURL parses and normalises a remote broker URL (tcp, mqtt, ssl,
// tls, mqtts, ws, wss), adding the scheme's default port when missing. The
// config check and the client use it, so both accept the same URLs.
func ParseBrokerURL(s string) (*url.URL, error) { return brokerURL(s) }

func brokerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: broker url: %w", ErrInvalidOptions, err)
	}
	scheme := strings.ToLower(u.Scheme)
	var port string
	switch scheme {
	case "tcp", "mqtt":
		port = "1883"
	case "ssl", "tls", "mqtts":
		port = "8883"
	case "ws":
		port = "80"
	case "wss":
		port = "443"
	default:
		return nil, fmt.Errorf("%w: %w %q (want tcp, mqtt, ssl, tls, mqtts, ws or wss)",
			ErrInvalidOptions, ErrBrokerScheme, u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%w: broker url %q: missing host", ErrInvalidOptions, u.Redacted())
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	} else if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("%w: broker url %q: port out of range", ErrInvalidOptions, u.Redacted())
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		// url.Parse lets through hosts such as "]0" that no dialer takes.
		return nil, fmt.Errorf("%w: broker url %q: bad host: %w", ErrInvalidOptions, u.Redacted(), err)
	}
	u.Scheme = scheme
	return u, nil
}

// IsTLSScheme reports whether a broker URL scheme (lower case, as
// ParseBrokerURL gives it) uses TLS: ssl, tls, mqtts and wss.
func IsTLSScheme(scheme string) bool {
	switch scheme {
	case "ssl", "tls", "mqtts", "wss":
		return true
	}
	return false
}
