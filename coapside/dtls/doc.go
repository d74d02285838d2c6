// Package dtls is the DTLS 1.2 transport under the CoAP stack (RFC 7252 §9),
// built on github.com/pion/dtls/v2.
//
// Both ends are plain net.PacketConn values so the CoAP message layer runs over
// them unchanged:
//
//   - ServerConn multiplexes DTLS sessions from many peers on one UDP socket.
//     ReadFrom returns the next decrypted datagram and its peer, WriteTo encrypts
//     to that peer's session, and PeerIdentity reports the authenticated PSK
//     identity or certificate subject.
//   - ClientConn dials a session on the first WriteTo to an address and reuses it
//     for later datagrams; replies arrive on ReadFrom.
//
// Authentication is by pre-shared key (PSKStore, loaded from a psk_file) or by
// X.509 ECDSA certificates with CA verification and optional SPKI pinning.
// Limits (handshake timeout, concurrent handshakes, sessions, idle expiry) and
// counters (Stats) protect the listener from floods and make failures visible.
//
// Connection ID (RFC 9146) is not available: pion/dtls v2 does not implement it,
// so a peer whose NAT mapping changes must handshake again.
package dtls
