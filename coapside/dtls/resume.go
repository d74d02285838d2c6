package dtls

import (
	"container/list"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"

	pdtls "github.com/pion/dtls/v2"
	"github.com/pion/dtls/v2/pkg/protocol"
	"github.com/pion/dtls/v2/pkg/protocol/handshake"
)

// Session resumption (RFC 5246 §7.3, abbreviated handshake). pion/dtls v2
// has no Connection ID (RFC 9146), so a peer whose NAT binding changed must
// handshake again; resuming a cached session makes that one round trip
// with no key exchange, certificate or signature.
//
// Each end keeps a bounded cache: the server by session ID, the client by
// server address. What pion stores (ID and master secret) is kept with what
// the full handshake authenticated, because pion runs neither the PSK
// callback nor certificate verification on a resumed handshake: the
// identity is restored from the cache, never left empty. An entry is
// committed only when its handshake completes, and a server entry made with
// a PSK resumes only while the PSK store holds that identity with the same
// key (a reload that removes or changes it ends resumption for it).

// Defaults for Limits.ResumeSessions and Limits.ResumeLifetime.
const (
	DefaultResumeSessions = 10_000
	DefaultResumeLifetime = 24 * time.Hour
)

// resumeEntry is one resumable session.
type resumeEntry struct {
	key      string
	id       []byte
	secret   []byte
	identity string
	// psk: the full handshake used a PSK, whose digest is binding.
	// On a client, binding is the digest of the credentials instead.
	psk     bool
	binding [sha256.Size]byte
	// roots is a client's trust anchors when the session was made: a
	// pool has no digest, and holding it keeps its identity unique.
	roots   *x509.CertPool
	expires time.Time
	// owner is the session last established with this entry (server):
	// resuming it from another address supersedes that session.
	owner *session
}

// resumeCache is a session cache bounded by count (least recently used
// first out) and lifetime. It is safe for concurrent use.
type resumeCache struct {
	max int
	ttl time.Duration
	now func() time.Time

	mu  sync.Mutex
	m   map[string]*list.Element // of *resumeEntry
	lru list.List                // front: most recently used
}

// newResumeCache returns nil (no resumption) for max < 0.
func newResumeCache(max int, ttl time.Duration, now func() time.Time) *resumeCache {
	if max < 0 {
		return nil
	}
	return &resumeCache{max: max, ttl: ttl, now: now, m: make(map[string]*list.Element)}
}

// get returns a copy of the live entry for key.
func (c *resumeCache) get(key string) (resumeEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[key]
	if !ok {
		return resumeEntry{}, false
	}
	e := el.Value.(*resumeEntry)
	if !c.now().Before(e.expires) {
		c.removeLocked(el)
		return resumeEntry{}, false
	}
	c.lru.MoveToFront(el)
	return *e, true
}

// put stores e, evicting the least recently used entry at the bound.
func (c *resumeCache) put(e resumeEntry) {
	e.expires = c.now().Add(c.ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[e.key]; ok {
		*el.Value.(*resumeEntry) = e
		c.lru.MoveToFront(el)
		return
	}
	for c.lru.Len() >= c.max && c.lru.Len() > 0 {
		c.removeLocked(c.lru.Back())
	}
	c.m[e.key] = c.lru.PushFront(&e)
}

// claim makes s the owner of the entry for key and returns the previous
// owner.
func (c *resumeCache) claim(key string, s *session) *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[key]
	if !ok {
		return nil
	}
	e := el.Value.(*resumeEntry)
	prev := e.owner
	e.owner = s
	return prev
}

// release forgets s as the owner of any entry (its session ended).
func (c *resumeCache) release(key string, s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		if e := el.Value.(*resumeEntry); e.owner == s {
			e.owner = nil
		}
	}
}

func (c *resumeCache) del(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		c.removeLocked(el)
	}
}

func (c *resumeCache) removeLocked(el *list.Element) {
	c.lru.Remove(el)
	delete(c.m, el.Value.(*resumeEntry).key)
}

func (c *resumeCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// sessionStore is the pion SessionStore of one handshake: it reads the
// shared cache and stages what the handshake stores on its session, to be
// committed only if the handshake completes (session.commitResumption).
type sessionStore struct {
	cache *resumeCache
	sess  *session
	// valid reports whether a cached entry may still resume.
	valid func(e *resumeEntry) bool
	// bind records in a new entry what it must be checked against:
	// the PSK digest (server), the credentials (client).
	bind func(e *resumeEntry)
}

// Set implements pdtls.SessionStore. pion calls it during a full
// handshake, before the peer's Finished is verified.
func (st *sessionStore) Set(key []byte, s pdtls.Session) error {
	e := &resumeEntry{
		key:    string(key),
		id:     append([]byte(nil), s.ID...),
		secret: append([]byte(nil), s.Secret...),
	}
	st.bind(e)
	st.sess.staged.Store(e)
	return nil
}

// Get implements pdtls.SessionStore. A miss is an empty Session and no
// error (an error would abort the handshake).
func (st *sessionStore) Get(key []byte) (pdtls.Session, error) {
	e, ok := st.cache.get(string(key))
	if !ok {
		return pdtls.Session{}, nil
	}
	if !st.valid(&e) {
		st.cache.del(e.key)
		st.sess.ep.stats.resumeInvalid.Add(1)
		return pdtls.Session{}, nil
	}
	st.sess.offered.Store(&e)
	return pdtls.Session{ID: e.id, Secret: e.secret}, nil
}

// Del implements pdtls.SessionStore (pion deletes after a fatal alert).
func (st *sessionStore) Del(key []byte) error {
	st.cache.del(string(key))
	return nil
}

// commitResumption runs when the handshake of s has completed: a full
// handshake's staged entry enters the cache; a resumed one restores the
// identity the full handshake authenticated. It reports whether the
// handshake was resumed and, on a server, the session that held the same
// resumed session until now.
func (s *session) commitResumption(cache *resumeCache) (resumed bool, prev *session) {
	if cache == nil {
		return false, nil
	}
	if e := s.staged.Load(); e != nil {
		e.identity = s.identity()
		e.owner = s
		s.resumeKey = e.key
		cache.put(*e)
		return false, nil
	}
	e := s.offered.Load()
	if e == nil {
		return false, nil
	}
	// A client offered the session but the server may have refused it;
	// pion ran a full handshake then, which staged a new entry (above).
	s.setIdentity(e.identity)
	s.resumeKey = e.key
	return true, cache.claim(e.key, s)
}

// keyDigest binds a cache entry to a PSK.
func keyDigest(key []byte) [sha256.Size]byte { return sha256.Sum256(key) }

// credentialsDigest binds a client cache entry to the credentials it was
// made with, so that changed credentials never resume an old session
// (RootCAs, which has no digest, is compared with resumeEntry.roots).
func credentialsDigest(cr *Credentials) [sha256.Size]byte {
	h := sha256.New()
	write := func(b []byte) {
		var n [4]byte
		n[0], n[1], n[2], n[3] = byte(len(b)>>24), byte(len(b)>>16), byte(len(b)>>8), byte(len(b))
		h.Write(n[:])
		h.Write(b)
	}
	write([]byte(cr.PSKIdentity))
	write(cr.PSK.Bytes())
	write([]byte(cr.ServerName))
	if cr.InsecureSkipVerify {
		write([]byte{1})
	}
	for _, p := range cr.Pins {
		write(p[:])
	}
	if cr.Certificate != nil && len(cr.Certificate.Certificate) > 0 {
		write(cr.Certificate.Certificate[0])
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// flightHold delivers a server's flight to a client handshake from its
// ServerHello to its ServerHelloDone as one datagram. pion/dtls v2.2.12
// clients with a session store record the session ID of a ServerHello the
// first time they parse it; when the rest of the flight is not in the same
// datagram (a server that sends each message in a datagram of its own, as
// GnuTLS does, or a certificate chain past the MTU), the next parse takes
// that ID for an accepted resumption and waits for a Finished that never
// comes. Records are self-delimiting, so holding the ServerHello and
// joining the flight's datagrams until its ServerHelloDone (or the
// ChangeCipherSpec of an abbreviated handshake) avoids that. It is used by
// the read loop only.
type flightHold struct {
	held []byte
}

// maxHeldBytes bounds a joined flight (pion reads datagrams of up to 8 KiB);
// a longer one is let through as it came.
const maxHeldBytes = 8000

// push takes the next datagram from the server and returns those to
// deliver now, in order.
func (h *flightHold) push(b []byte) [][]byte {
	hello, done, other := scanServerFlight(b)
	switch {
	case h.held != nil && len(h.held)+len(b) > maxHeldBytes:
		out := [][]byte{h.held, b}
		h.held = nil
		return out
	case h.held != nil:
		h.held = append(h.held, b...)
		if done || other {
			out := h.held
			h.held = nil
			return [][]byte{out}
		}
		return nil
	case hello && !done && !other:
		h.held = b
		return nil
	default:
		return [][]byte{b}
	}
}

// scanServerFlight reports whether the records of b hold a plaintext
// ServerHello, a ServerHelloDone, or anything else than epoch-0 handshake
// records (a ChangeCipherSpec, an alert, encrypted records).
func scanServerFlight(b []byte) (hello, done, other bool) {
	for len(b) >= recordHeaderLen {
		n := recordHeaderLen + int(binary.BigEndian.Uint16(b[11:13]))
		if n > len(b) {
			return hello, done, true
		}
		epoch := binary.BigEndian.Uint16(b[3:5])
		if protocol.ContentType(b[0]) != protocol.ContentTypeHandshake || epoch != 0 || n == recordHeaderLen {
			other = true
		} else {
			switch handshake.Type(b[recordHeaderLen]) {
			case handshake.TypeServerHello:
				hello = true
			case handshake.TypeServerHelloDone:
				done = true
			}
		}
		b = b[n:]
	}
	return hello, done, other
}
