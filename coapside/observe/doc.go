// Package observe implements the protocol logic of CoAP Observe (RFC 7641)
// without I/O: 24-bit sequence numbers and the client-side freshness rule
// (§3.4) with a per-observation Tracker, and the server-side Notifier, a
// registry of observers per resource that fans new resource states out
// through a Sender with at most one notification in flight per observer and
// latest-value-wins for slow observers (§4.5.2).
//
// Server wiring:
//
//	n := observe.New(sender, observe.Options{Logger: log})
//	go n.Run(ctx)                        // workers; stops when ctx ends
//	// GET with Observe=0 on an observable resource:
//	reg, err := n.Register(path, peer.String(), req.Token)
//	//   answer 2.05 with Observe=reg.Seq (err: answer without Observe)
//	// GET with Observe=1:
//	n.Deregister(peer.String(), req.Token)
//	// application code, on a new value:
//	n.Notify(path, observe.State{Payload: v, ContentFormat: cf, MaxAge: 60})
//
// The Sender builds the response message from a Notification (token,
// Observe=Seq, Content-Format, Max-Age, CON or NON) and reports RST and CON
// timeouts by returning errors wrapping ErrReset and ErrTimeout.
//
// Client wiring: keep one Tracker per observation, call Check with each
// notification's Observe value and deliver only when the Verdict is
// Accepted; re-register at ReregisterAt, and Clear the Tracker when the
// answer to the re-registration arrives: it is fresh whatever its value (a
// rebooted server numbers from a low value again) and starts the sequence
// later notifications are judged against.
package observe
