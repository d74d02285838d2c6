// Package observe implements the protocol logic of CoAP Observe (RFC 7641)
// without I/O: 24-bit sequence numbers and the client-side freshness rule
// (§3.4) with a per-observation Tracker, and the server-side Notifier, a
// registry of observers per resource that fans new resource states out
// through a Sender with at most one notification in flight per observer and
// latest-value-wins for slow observers (§4.5.2).
package observe
