package coapside

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/coap-mqtt/bridge/coapside/uri"
)

// Sentinel errors of the message layer, client and server.
var (
	// ErrClosed is returned by operations on a closed Endpoint or Client.
	ErrClosed = errors.New("coap: endpoint closed")
	// ErrServerClosed is returned by Server.Serve after Shutdown.
	ErrServerClosed = errors.New("coap: server closed")
	// ErrTimeout means a confirmable message was not acknowledged after
	// MAX_RETRANSMIT retransmissions (RFC 7252 §4.2).
	ErrTimeout = errors.New("coap: no acknowledgement (retransmissions exhausted)")
	// ErrUnreachable means the peer's address answered with ICMP port
	// unreachable: nothing listens there any more (its socket closed, the
	// device restarted on another port). What was pending for it fails at
	// once instead of waiting for retransmissions to run out. Linux only;
	// it wraps syscall.ECONNREFUSED.
	ErrUnreachable = fmt.Errorf("coap: destination port unreachable: %w", syscall.ECONNREFUSED)
	// ErrReset means the peer answered with a Reset message (RFC 7252 §4.2, §4.3).
	ErrReset = errors.New("coap: reset by peer")
	// ErrPeerBusy means too many messages are queued for one peer behind NSTART.
	ErrPeerBusy = errors.New("coap: too many messages queued for peer")
	// ErrNotSent means a request's context ended while it still waited
	// behind earlier unanswered requests to the peer (NSTART, RFC 7252
	// §4.7): it never left, so the peer cannot have acted on it. It comes
	// wrapped with the context's error.
	ErrNotSent = errors.New("coap: not sent: earlier requests to the peer were still unanswered")
	// ErrTooManyPeers means the per-peer table of a server's endpoint is full
	// of peers with traffic in flight.
	ErrTooManyPeers = errors.New("coap: peer table full")
	// ErrTokenInUse means a token is already registered for the peer.
	ErrTokenInUse = errors.New("coap: token already registered")
	// ErrInvalidURL means a URL cannot be mapped to CoAP options (RFC 7252
	// §6.4); it is uri.ErrInvalidURL.
	ErrInvalidURL = uri.ErrInvalidURL
	// ErrMessageType means a message of the wrong type was given (e.g. ACK to Send).
	ErrMessageType = errors.New("coap: invalid message type for operation")
	// ErrStalled means a listener has stopped reading its conn (Server.Health).
	ErrStalled = errors.New("coap: listener stopped reading")
	// ErrServerStarted is returned by Server.Serve for a conn the server
	// is already serving; the conn stays with the first Serve.
	ErrServerStarted = errors.New("coap: server already serving this conn")
	// ErrBlockwise means a block-wise transfer broke off: a missing or
	// unexpected block option, a block out of sequence, or an error code
	// in the middle of the transfer (RFC 7959).
	ErrBlockwise = errors.New("coap: block-wise transfer failed")
	// ErrNotObservable means the server answered an Observe registration
	// without the Observe option: the resource cannot be observed and the
	// caller should poll it instead (RFC 7641 §3.1).
	ErrNotObservable = errors.New("coap: resource not observable")
	// ErrObservationEnded means the server ended an observation: a
	// notification with an error code or without Observe (RFC 7641 §3.2).
	ErrObservationEnded = errors.New("coap: observation ended by server")
	// ErrObservationLost means a re-registration of an observation got no
	// answer, so the observation is presumed dead (RFC 7641 §3.3.1).
	ErrObservationLost = errors.New("coap: observation lost")
	// ErrUnexpectedFormat means a response carried another Content-Format
	// than the operation needs (for example link-format for discovery).
	ErrUnexpectedFormat = errors.New("coap: unexpected content format")
	// ErrCanceled means the observation was canceled by its owner.
	ErrCanceled = errors.New("coap: observation canceled")
)
