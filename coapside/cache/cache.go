package cache

import (
	"sync"
	"time"
)

// Default bounds of a Cache.
const (
	DefaultMaxEntries       = 10_000
	DefaultMaxBytes   int64 = 32 << 20
)

// Options configures a Cache. The zero value gives the defaults.
type Options struct {
	// MaxEntries bounds the number of entries; default DefaultMaxEntries.
	MaxEntries int
	// MaxBytes bounds the bytes of all entries: key, payload, ETag and
	// option values; default DefaultMaxBytes. An entry larger than
	// MaxBytes/8 is not stored (counted in Stats.TooLarge).
	MaxBytes int64
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Stats is a snapshot of a cache's counters (monotonic since New) and size.
type Stats struct {
	Hits          uint64 // Get found a fresh entry
	StaleHits     uint64 // Get found a stale entry
	Misses        uint64 // Get found nothing
	Stores        uint64 // Put stored an entry
	Evictions     uint64 // entries removed to keep the bounds
	TooLarge      uint64 // Put refused an entry larger than MaxBytes/8
	Revalidations uint64 // Revalidated refreshed an entry
	Invalidations uint64 // entries marked stale by Invalidate
	Entries       int    // entries held now
	Bytes         int64  // bytes held now
}

// Cache holds responses under their Key, bounded in entries and bytes with
// least-recently-used eviction. It is safe for concurrent use.
type Cache struct {
	maxEntries int
	maxBytes   int64
	now        func() time.Time

	mu        sync.Mutex
	entries   map[Key]*node
	resources map[string]*node // resource (target 0x00 path) -> first node of its list
	lru       node             // sentinel: lru.next is the most recently used
	bytes     int64
	stats     Stats
}

// node is an entry in the LRU list and in its resource's list.
type node struct {
	key        Key
	res        string // resource prefix of key ("" for a key KeyOf did not build)
	e          *Entry
	size       int64
	prev, next *node // LRU list, circular through Cache.lru
	rprev      *node // resource list, nil-terminated; the head is in Cache.resources
	rnext      *node
}

// New returns an empty cache.
func New(opts Options) *Cache {
	c := &Cache{
		maxEntries: opts.MaxEntries,
		maxBytes:   opts.MaxBytes,
		now:        opts.Now,
		entries:    make(map[Key]*node),
		resources:  make(map[string]*node),
	}
	if c.maxEntries <= 0 {
		c.maxEntries = DefaultMaxEntries
	}
	if c.maxBytes <= 0 {
		c.maxBytes = DefaultMaxBytes
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.lru.prev, c.lru.next = &c.lru, &c.lru
	return c
}

// Get returns the entry for k and whether it is fresh; it counts a hit
// (fresh), a stale hit, or a miss, and makes the entry the most recently
// used. The entry must not be modified.
func (c *Cache) Get(k Key) (e *Entry, fresh, ok bool) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.entries[k]
	if n == nil {
		c.stats.Misses++
		return nil, false, false
	}
	c.touch(n)
	_, fresh = n.e.Remaining(now)
	if fresh {
		c.stats.Hits++
	} else {
		c.stats.StaleHits++
	}
	return n.e, fresh, true
}

// Peek returns the entry for k like Get but counts nothing and leaves the
// LRU order alone (for revalidation decisions and status pages). The entry
// must not be modified.
func (c *Cache) Peek(k Key) (*Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.entries[k]
	if n == nil {
		return nil, false
	}
	return n.e, true
}

// Put stores e under k, replacing any entry there, and evicts
// least-recently-used entries until both bounds hold (counted in
// Stats.Evictions). The cache takes ownership of e and of the slices it
// references, copying nothing: the caller must not modify them afterwards.
// A zero e.Stored is set to the cache's clock. An entry larger than
// MaxBytes/8 is not stored, and the entry it would have replaced is
// removed, since it is older than the answer just received. A nil e is
// ignored.
func (c *Cache) Put(k Key, e *Entry) {
	if e == nil {
		return
	}
	if e.Stored.IsZero() {
		e.Stored = c.now()
	}
	size := int64(len(k)) + e.size()
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.entries[k]
	if size > c.maxBytes/8 {
		c.stats.TooLarge++
		if old != nil {
			c.remove(old)
		}
		return
	}
	c.stats.Stores++
	if old != nil {
		c.bytes += size - old.size
		old.e, old.size = e, size
		c.touch(old)
	} else {
		n := &node{key: k, e: e, size: size}
		if res, _, ok := k.split(); ok {
			n.res = res
		}
		c.entries[k] = n
		c.bytes += size
		c.pushFront(n)
		c.linkResource(n)
	}
	for len(c.entries) > c.maxEntries || c.bytes > c.maxBytes {
		c.remove(c.lru.prev)
		c.stats.Evictions++
	}
}

// Revalidated records a 2.03 Valid answer to a conditional request made with
// the entry's ETag: the entry under k is fresh again for maxAge seconds from
// now, the Max-Age of the 2.03 (explicit or the default 60, RFC 7252
// §5.9.1.3). It returns the refreshed entry, a new one (entries already
// handed out are not modified), and false when k is no longer cached.
func (c *Cache) Revalidated(k Key, maxAge uint32) (*Entry, bool) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.entries[k]
	if n == nil {
		return nil, false
	}
	e := *n.e
	e.MaxAge, e.Stored = maxAge, now
	n.e = &e
	c.touch(n)
	c.stats.Revalidations++
	return n.e, true
}

// Invalidate marks as stale every entry whose target and path equal those
// given, whatever its method, query, Accept or other options, and returns
// how many it found: a cache must not serve a stored response for a resource
// that a successful POST, PUT, DELETE or PATCH changed (RFC 7252 §5.9.1.1,
// §5.9.1.2, §5.9.1.4, RFC 8132 §3). target is the string given to KeyOf;
// path is the Uri-Path as message.Options.Path gives it ("/a/b"; a missing
// leading "/" is added). The entries stay cached, stale, with their ETag for
// revalidation.
func (c *Cache) Invalidate(target, path string) int {
	res := resourceOf(target, path)
	c.mu.Lock()
	defer c.mu.Unlock()
	count := 0
	for n := c.resources[res]; n != nil; n = n.rnext {
		if n.e.MaxAge != 0 {
			e := *n.e
			e.MaxAge = 0
			n.e = &e
		}
		count++
	}
	c.stats.Invalidations += uint64(count)
	return count
}

// Len returns the number of entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Bytes returns the bytes held (keys, payloads, ETags and option values).
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Stats returns a snapshot of the counters and the current size.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Entries, s.Bytes = len(c.entries), c.bytes
	return s
}

// remove drops n from the map and both lists. c.mu is held.
func (c *Cache) remove(n *node) {
	delete(c.entries, n.key)
	c.bytes -= n.size
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next = nil, nil
	c.unlinkResource(n)
}

// touch makes n the most recently used. c.mu is held.
func (c *Cache) touch(n *node) {
	if c.lru.next == n {
		return
	}
	n.prev.next, n.next.prev = n.next, n.prev
	c.pushFront(n)
}

func (c *Cache) pushFront(n *node) {
	n.prev, n.next = &c.lru, c.lru.next
	c.lru.next.prev = n
	c.lru.next = n
}

func (c *Cache) linkResource(n *node) {
	if n.res == "" {
		return
	}
	head := c.resources[n.res]
	n.rnext = head
	if head != nil {
		head.rprev = n
	}
	c.resources[n.res] = n
}

func (c *Cache) unlinkResource(n *node) {
	if n.res == "" {
		return
	}
	if n.rprev != nil {
		n.rprev.rnext = n.rnext
	} else if n.rnext != nil {
		c.resources[n.res] = n.rnext
	} else {
		delete(c.resources, n.res)
	}
	if n.rnext != nil {
		n.rnext.rprev = n.rprev
	}
	n.rprev, n.rnext = nil, nil
}
