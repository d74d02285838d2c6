// Package coapside is the CoAP stack of the bridge (RFC 7252 over UDP or any
// net.PacketConn): the message layer (Endpoint: message IDs, CON
// retransmission, deduplication, piggybacked and separate responses, ping,
// NSTART), a request/response Client and a net/http-shaped Server with a
// pattern ServeMux. The wire codec lives in the message sub-package.
//
// # Endpoint
//
// An Endpoint owns one net.PacketConn. Client and Server each wrap one, and
// its exported methods are the seam for Observe notifications and
// block-wise transfers:
//
//   - Send / SendAsync transmit a CON or NON outside a request/response pair
//     (a notification) and report Acknowledged, ResetByPeer, TimedOut,
//     Unreachable or, for a NON, NoReply.
//   - Exchange sends a request and routes every response carrying its token
//     (piggybacked, separate, later notifications) to a callback.
//   - RegisterToken routes responses for a token without sending anything;
//     CON responses are acknowledged, unknown tokens get RST.
//   - Ping sends an empty CON and expects RST.
//
// On Linux a UDP endpoint hears the ICMP port unreachable a closed peer
// answers with (IP_RECVERR): what is pending for that address ends at once
// with Unreachable / ErrUnreachable instead of timing out.
//
// Any net.PacketConn works (the DTLS transport provides one). A conn that
// implements PeerIdentityProvider exposes the authenticated identity of a
// peer to handlers through Request.PeerIdentity.
//
// # Concurrency and memory
//
// Each socket has a small pool of read goroutines that run handlers inline;
// when the last idle reader starts a handler another reader is started, up
// to ServerOptions.MaxConcurrent handlers, beyond which requests get 5.03
// with Max-Age; one source address gets at most
// ServerOptions.MaxConcurrentPerSource of them. On Linux UDP sockets readers move up to 16 datagrams per
// recvmmsg/sendmmsg call; datagrams read together with one whose handler
// runs longer than a millisecond are handed to goroutines of their own.
// Retransmissions and separate-response deadlines share one scheduler
// goroutine. Deduplication state is a fixed-size ring keyed by (peer,
// message ID), peer state a bounded table with expiry; evictions are
// counted in Stats.
package coapside
