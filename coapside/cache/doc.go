// Package cache is the response cache of the bridge's CoAP proxy (RFC 7252
// §5.6, §5.7): whole representations answered by devices to GET and FETCH,
// kept under a Key made of the method, the target device, the path, the query
// and every other request option that is part of the cache key (§5.4.6), and
// served while fresh according to Max-Age (§5.10.5).
//
// What it does:
//
//   - freshness: an Entry is fresh for Max-Age seconds after it was stored
//     (60 when the response carried no Max-Age; 0 means stored but never
//     fresh), and Entry.Remaining gives the Max-Age to send with a response
//     served from the cache;
//   - validation: a stale entry keeps its ETag (§5.10.6), so the proxy can
//     send a conditional request, and Revalidated makes the entry fresh again
//     when the device answers 2.03 Valid (§5.9.1.3);
//   - invalidation: Invalidate marks as stale every entry of a resource
//     (target and path, whatever the query or Accept) after a successful
//     POST, PUT, DELETE or PATCH on it (§5.9.1.1, §5.9.1.2, §5.9.1.4);
//   - bounds: a number of entries and a number of bytes, with
//     least-recently-used eviction; an entry larger than an eighth of the byte
//     bound is refused;
//   - counters: hits, stale hits, misses, stores, evictions, refusals,
//     revalidations and invalidations, read as a Stats snapshot.
//
// What it does not do:
//
//   - no Vary-like secondary keys: two requests share an entry only when
//     their keys are equal, so a different Accept or Uri-Query is a different
//     entry;
//   - no partial representations: the bridge's client reassembles Block2
//     before storing, and Block1/Block2/Size1/Size2 are not part of the key;
//   - no Observe: notifications of an observation are not cached here;
//   - no I/O and no decisions about what is cacheable: the proxy chooses what
//     to Put (2.05 Content answers in practice) and when to revalidate.
//
// Entries are immutable once handed to Put: the cache takes ownership of the
// Entry and of the slices it references, and the entries it returns must not
// be modified. NewEntry builds an Entry from a response that owns none of the
// decoded buffer.
//
// A Cache is safe for concurrent use; every operation is O(1) except
// Invalidate, which is linear in the number of entries of the resource.
package cache
