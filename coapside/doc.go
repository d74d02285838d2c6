// Package coapside is the CoAP stack of the bridge (RFC 7252 over UDP or any
// net.PacketConn): the message layer (Endpoint: message IDs, CON
// retransmission, deduplication, piggybacked and separate responses, ping,
// NSTART), a request/response Client and a net/http-shaped Server with a
// pattern ServeMux. The wire codec lives in the message sub-package.
//
// An Endpoint owns one net.PacketConn. Client and Server each wrap one, and
// its exported methods (Send, SendAsync, Exchange, RegisterToken) are the seam
// for Observe notifications and block-wise transfers.
package coapside
