// Package dtls is the DTLS 1.2 transport under the CoAP stack (RFC 7252 §9),
// built on github.com/pion/dtls/v2.
//
// Both ends are plain net.PacketConn values so the CoAP message layer runs
// over them unchanged:
//
//   - ServerConn (Listen, NewServerConn) multiplexes DTLS sessions from many
//     peers on one UDP socket. ReadFrom returns the next decrypted datagram
//     and its peer, WriteTo encrypts to that peer's session (ErrNoSession
//     without one), and PeerIdentity reports the authenticated PSK identity
//     or certificate subject CN, which makes it a
//     coapside.PeerIdentityProvider.
//   - ClientConn (NewClientConn, NewClientConnOn) performs a handshake on
//     the first WriteTo to an address, reuses the session for later
//     datagrams, and delivers replies on ReadFrom. Credentials can differ
//     per server (ClientConfig.CredentialsFor).
//
// Wiring, in brief:
//
//	cfg, err := dtls.LoadServerConfig(dtls.ServerFiles{PSKFile: ..., CertFile: ...}, dtls.Limits{Logger: log})
//	conn, err := dtls.Listen("udp", ":5684", cfg)
//	go coapServer.Serve(conn)                  // handlers see r.PeerIdentity()
//	...
//	cfg.PSK.Reload()                           // on SIGHUP: new handshakes use the new keys
//
//	cli, err := dtls.NewClientConn("", dtls.ClientConfig{Credentials: creds})
//	coapClient, err := coapside.NewClient(coapside.ClientOptions{Conn: cli})
//
// Authentication is by pre-shared key (PSKStore, loaded from a psk_file; see
// keys.ParsePSKFile) or by X.509 ECDSA certificates verified against a CA
// pool, or accepted by SPKI pin (raw-public-key style). Key syntax, the
// psk_file format, pins and the Secret type (which never prints) live in
// the pion-free package keys, which the rule loader shares; Secret and Pin
// are re-exported here. LoadCredentials is the one builder of a device's
// trust (PSK, certificate, CA file, pins).
//
// Protection of the listener: nothing is allocated for a datagram from an
// unknown address unless it is a well-formed ClientHello without a cookie
// (plaintext CoAP, stray records, malformed hellos and hellos carrying a
// cookie no handshake in progress issued are dropped and counted). The first
// ClientHello is answered with a HelloVerifyRequest cookie (RFC 6347 §4.2.1);
// until the client returns that exact cookie its handshake only borrows a
// slot: at MaxHandshakes or MaxSessions a new ClientHello evicts the oldest
// such handshake, so a spoofed-source flood cannot keep out a client that
// answers, and an unanswered handshake ends after CookieTimeout. pion/dtls v2
// keeps state from the first ClientHello (its cookie is random and checked
// against its own state, and its handshake numbering starts at that hello),
// so the cookie cannot be checked statelessly in front of it. Handshake
// failures are logged at Warn at most once a second per reason and counted
// always; concurrent handshakes, sessions, handshake time and idle time are
// bounded.
// Stats exposes the counters for metrics.
//
// Session resumption (resume.go): both ends cache completed sessions
// (Limits.ResumeSessions, ResumeLifetime), so a peer that handshakes again
// gets an abbreviated handshake (RFC 5246 §7.3) with the identity its full
// handshake authenticated; Stats.HandshakesResumed counts them. A server
// entry made with a PSK resumes only while the PSKStore holds that identity
// with the same key. A session resumed from a new address ends the session
// at the old one (Stats.SessionsMoved).
//
// Connection ID (RFC 9146) is not available: pion/dtls v2 does not implement
// it (v3 does), so a peer whose NAT mapping changes must handshake again
// (resuming, when both ends still hold the session). Until it does, records
// of its old session from the new address are dropped unanswered
// (Stats.DroppedUnknownPeer); a ClientConn starts that handshake itself
// once a session has gone unanswered for DeadAfter.
package dtls
