package cache_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coap-mqtt/bridge/coapside/cache"
	"github.com/coap-mqtt/bridge/coapside/message"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a fake clock safe for concurrent use.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// pathKey is the key of a GET of target/path?query.
func pathKey(target, path string, query ...string) cache.Key {
	opts := message.Options(nil).SetPath(path)
	for _, q := range query {
		opts = opts.AddString(message.URIQuery, q)
	}
	return cache.KeyOf(message.GET, target, opts, nil)
}

func entry(payload string, maxAge uint32) *cache.Entry {
	return &cache.Entry{Code: message.Content, ContentFormat: -1, Payload: []byte(payload), MaxAge: maxAge}
}

func TestRemaining(t *testing.T) {
	stored := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		maxAge    uint32
		elapsed   time.Duration
		remaining uint32
		fresh     bool
	}{
		{0, 0, 0, false}, // Max-Age 0: stored, never fresh
		{0, -time.Second, 0, false},
		{60, 0, 60, true},
		{60, 500 * time.Millisecond, 59, true},
		{60, 59 * time.Second, 1, true},
		{60, 59*time.Second + 999*time.Millisecond, 0, true},
		{60, 60 * time.Second, 0, false},
		{60, time.Hour, 0, false},
		{60, -time.Minute, 60, true}, // clock behind Stored: age 0
		{1<<32 - 1, 100 * 365 * 24 * time.Hour, 1<<32 - 1 - 100*365*24*3600, true},
	}
	for _, tt := range tests {
		e := &cache.Entry{MaxAge: tt.maxAge, Stored: stored}
		r, f := e.Remaining(stored.Add(tt.elapsed))
		if r != tt.remaining || f != tt.fresh {
			t.Errorf("MaxAge %d after %v: Remaining = %d, %v; want %d, %v", tt.maxAge, tt.elapsed, r, f, tt.remaining, tt.fresh)
		}
	}
}

func TestGetFreshness(t *testing.T) {
	clk := newClock()
	c := cache.New(cache.Options{Now: clk.Now})
	k60 := pathKey(target, "/default")
	k0 := pathKey(target, "/zero")
	// A 2.05 without Max-Age is fresh for 60 s (RFC 7252 §5.10.5).
	c.Put(k60, cache.NewEntry(message.Content, nil, []byte("21.5"), clk.Now()))
	c.Put(k0, cache.NewEntry(message.Content, message.Options(nil).SetMaxAge(0), []byte("x"), clk.Now()))

	check := func(k cache.Key, wantFresh bool) {
		t.Helper()
		e, fresh, ok := c.Get(k)
		if !ok || e == nil || fresh != wantFresh {
			t.Fatalf("Get(%s) = %v, fresh %v, ok %v; want fresh %v", k, e, fresh, ok, wantFresh)
		}
	}
	check(k60, true)
	check(k0, false)
	clk.Advance(59 * time.Second)
	check(k60, true)
	clk.Advance(time.Second)
	check(k60, false)
	if _, _, ok := c.Get(pathKey(target, "/none")); ok {
		t.Fatal("Get of an absent key found something")
	}
	st := c.Stats()
	if st.Hits != 2 || st.StaleHits != 2 || st.Misses != 1 || st.Stores != 2 || st.Entries != 2 {
		t.Fatalf("stats %+v", st)
	}
	// Peek counts nothing.
	if _, ok := c.Peek(k60); !ok {
		t.Fatal("Peek missed")
	}
	if _, ok := c.Peek(pathKey(target, "/none")); ok {
		t.Fatal("Peek of an absent key found something")
	}
	if st2 := c.Stats(); st2 != st {
		t.Fatalf("Peek changed stats: %+v -> %+v", st, st2)
	}
}

func TestPutSetsStored(t *testing.T) {
	clk := newClock()
	c := cache.New(cache.Options{Now: clk.Now})
	k := pathKey(target, "/a")
	c.Put(k, entry("x", 10))
	clk.Advance(5 * time.Second)
	e, fresh, _ := c.Get(k)
	if !e.Stored.Equal(clk.Now().Add(-5*time.Second)) || !fresh {
		t.Fatalf("Stored %v, fresh %v", e.Stored, fresh)
	}
	c.Put("", nil) // ignored
	c.Put(k, nil)
	if c.Len() != 1 {
		t.Fatalf("Len %d after nil Put", c.Len())
	}
}

func TestEvictionByEntries(t *testing.T) {
	c := cache.New(cache.Options{MaxEntries: 3, Now: newClock().Now})
	ka, kb, kc, kd := pathKey(target, "/a"), pathKey(target, "/b"), pathKey(target, "/c"), pathKey(target, "/d")
	c.Put(ka, entry("a", 60))
	c.Put(kb, entry("b", 60))
	c.Put(kc, entry("c", 60))
	c.Get(ka)  // a is now the most recently used: b is the least
	c.Peek(kb) // Peek leaves the order alone
	c.Put(kd, entry("d", 60))
	if _, ok := c.Peek(kb); ok {
		t.Fatal("b survived: not the least recently used one was evicted")
	}
	for _, k := range []cache.Key{ka, kc, kd} {
		if _, ok := c.Peek(k); !ok {
			t.Fatalf("%s evicted", k)
		}
	}
	// Replacing an entry is not an eviction and makes it the most recent.
	c.Put(kc, entry("c2", 60))
	c.Put(kb, entry("b", 60)) // evicts a
	if _, ok := c.Peek(ka); ok {
		t.Fatal("a survived")
	}
	st := c.Stats()
	if st.Evictions != 2 || st.Entries != 3 || st.Stores != 6 {
		t.Fatalf("stats %+v", st)
	}
	if e, _ := c.Peek(kc); string(e.Payload) != "c2" {
		t.Fatalf("replaced entry has %q", e.Payload)
	}
}

func TestEvictionByBytes(t *testing.T) {
	const maxBytes = 800 // entries up to 100 bytes
	c := cache.New(cache.Options{MaxBytes: maxBytes, Now: newClock().Now})
	// sized returns an entry that accounts for size bytes under k: key,
	// payload and ETag.
	sized := func(k cache.Key, size int) *cache.Entry {
		e := entry(string(make([]byte, size-len(k)-4)), 60)
		e.ETag = []byte{1, 2, 3, 4}
		return e
	}
	keys := make([]cache.Key, 12)
	for i := range keys {
		keys[i] = pathKey(target, fmt.Sprintf("/r%02d", i))
		before := c.Bytes()
		c.Put(keys[i], sized(keys[i], 100))
		if i < 8 && c.Bytes() != before+100 {
			t.Fatalf("Bytes %d after Put of 100 bytes onto %d", c.Bytes(), before)
		}
	}
	// 800 bytes hold eight entries: the four oldest were evicted.
	st := c.Stats()
	if st.Entries != 8 || st.Evictions != 4 || st.Bytes != 800 {
		t.Fatalf("stats %+v", st)
	}
	for i, k := range keys {
		if _, ok := c.Peek(k); ok != (i >= 4) {
			t.Errorf("entry %d present %v, want %v", i, ok, i >= 4)
		}
	}
	// Shrink the newest entry and add a small one: 750 + 50 fits.
	c.Put(keys[11], sized(keys[11], 50))
	extra := pathKey(target, "/extra")
	c.Put(extra, sized(extra, 50))
	if st := c.Stats(); st.Entries != 9 || st.Evictions != 4 || st.Bytes != 800 {
		t.Fatalf("after shrinking: %+v", st)
	}
	// Growing a replacement past the bound evicts the least recently used.
	c.Put(extra, sized(extra, 100))
	if st := c.Stats(); st.Entries != 8 || st.Evictions != 5 || st.Bytes != 750 {
		t.Fatalf("after growth: %+v", st)
	}
	if _, ok := c.Peek(keys[4]); ok {
		t.Fatal("the least recently used entry survived the growth")
	}
}

func TestTooLarge(t *testing.T) {
	const maxBytes = 800
	c := cache.New(cache.Options{MaxBytes: maxBytes, Now: newClock().Now})
	k := pathKey(target, "/big")
	room := maxBytes/8 - len(k)
	c.Put(k, entry(string(make([]byte, room)), 60)) // exactly MaxBytes/8: stored
	if _, ok := c.Peek(k); !ok || c.Bytes() != maxBytes/8 {
		t.Fatalf("entry of MaxBytes/8 not stored (bytes %d)", c.Bytes())
	}
	c.Put(k, entry(string(make([]byte, room+1)), 60))
	if _, ok := c.Peek(k); ok {
		t.Fatal("a too-large answer left the older entry in place")
	}
	st := c.Stats()
	if st.TooLarge != 1 || st.Stores != 1 || st.Entries != 0 || st.Bytes != 0 || st.Evictions != 0 {
		t.Fatalf("stats %+v", st)
	}
	// With the default bound, 4 MiB is the limit.
	d := cache.New(cache.Options{})
	d.Put(k, entry(string(make([]byte, 4<<20)), 60))
	if d.Stats().TooLarge != 1 || d.Len() != 0 {
		t.Fatalf("default bound: %+v", d.Stats())
	}
}

func TestRevalidated(t *testing.T) {
	clk := newClock()
	c := cache.New(cache.Options{Now: clk.Now})
	k := pathKey(target, "/temp")
	e := entry("21.5", 10)
	e.ETag = []byte{0xab}
	c.Put(k, e)
	clk.Advance(15 * time.Second)
	old, fresh, _ := c.Get(k)
	if fresh {
		t.Fatal("fresh after Max-Age")
	}
	// The device answers 2.03 Valid with Max-Age 30.
	re, ok := c.Revalidated(k, 30)
	if !ok {
		t.Fatal("Revalidated missed")
	}
	if r, f := re.Remaining(clk.Now()); !f || r != 30 || string(re.Payload) != "21.5" || string(re.ETag) != "\xab" {
		t.Fatalf("revalidated entry %+v: remaining %d fresh %v", re, r, f)
	}
	if got, fresh, _ := c.Get(k); got != re || !fresh {
		t.Fatal("Get does not return the revalidated entry")
	}
	// The entry handed out before is a snapshot: unchanged.
	if old.MaxAge != 10 || old == re {
		t.Fatalf("old entry modified: %+v", old)
	}
	clk.Advance(30 * time.Second)
	if _, fresh, _ := c.Get(k); fresh {
		t.Fatal("fresh after the new Max-Age")
	}
	if _, ok := c.Revalidated(pathKey(target, "/gone"), 30); ok {
		t.Fatal("Revalidated an absent key")
	}
	if st := c.Stats(); st.Revalidations != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInvalidate(t *testing.T) {
	clk := newClock()
	c := cache.New(cache.Options{Now: clk.Now})
	path := message.Options(nil).SetPath("/temp")
	hit := []cache.Key{
		pathKey(target, "/temp"),
		pathKey(target, "/temp", "unit=C"),
		pathKey(target, "/temp", "unit=F", "avg=1"),
		cache.KeyOf(message.GET, target, path.Clone().SetAccept(message.AppCBOR), nil),
		cache.KeyOf(message.FETCH, target, path.Clone().SetContentFormat(message.AppJSON), []byte(`{}`)),
	}
	miss := []cache.Key{
		pathKey(target, "/temp/min"),
		pathKey(target, "/tem"),
		pathKey(target, "/"),
		pathKey("coap://sensor-2", "/temp"),
		pathKey("coaps://sensor-1", "/temp"),
		pathKey("coap://sensor-10", "/temp"),
	}
	for _, k := range slices.Concat(hit, miss) {
		e := entry("v", 60)
		e.ETag = []byte{7}
		c.Put(k, e)
	}
	if n := c.Invalidate(target, "/temp"); n != len(hit) {
		t.Fatalf("Invalidate = %d, want %d", n, len(hit))
	}
	for _, k := range hit {
		e, fresh, ok := c.Get(k)
		if !ok || fresh {
			t.Errorf("%s: ok %v fresh %v, want a stale entry", k, ok, fresh)
		} else if string(e.ETag) != "\x07" {
			t.Errorf("%s lost its ETag", k)
		}
	}
	for _, k := range miss {
		if _, fresh, ok := c.Get(k); !ok || !fresh {
			t.Errorf("%s: ok %v fresh %v, want a fresh entry", k, ok, fresh)
		}
	}
	// Path without a leading slash; the root path.
	if n := c.Invalidate(target, "temp/min"); n != 1 {
		t.Fatalf("Invalidate(temp/min) = %d", n)
	}
	if n := c.Invalidate(target, ""); n != 1 {
		t.Fatalf("Invalidate(root) = %d", n)
	}
	if n := c.Invalidate(target, "/nothing"); n != 0 {
		t.Fatalf("Invalidate(/nothing) = %d", n)
	}
	// A revalidated entry is fresh again; a later Put too.
	if _, ok := c.Revalidated(hit[0], 60); !ok {
		t.Fatal("Revalidated missed")
	}
	if _, fresh, _ := c.Get(hit[0]); !fresh {
		t.Fatal("not fresh after revalidation")
	}
	if st := c.Stats(); st.Invalidations != uint64(len(hit)+2) {
		t.Fatalf("stats %+v", st)
	}
}

// TestModel runs random operations against the cache and a plain model of
// it (a slice in LRU order) to check eviction order, the resource index
// after removals, and the counters.
func TestModel(t *testing.T) {
	type mentry struct {
		k     cache.Key
		res   string
		stale bool
	}
	const maxEntries = 6
	clk := newClock()
	c := cache.New(cache.Options{MaxEntries: maxEntries, Now: clk.Now})
	var model []mentry // most recent first
	find := func(k cache.Key) int {
		return slices.IndexFunc(model, func(m mentry) bool { return m.k == k })
	}
	var want cache.Stats
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		dev := fmt.Sprintf("coap://d%d", rng.IntN(2))
		res := fmt.Sprintf("/r%d", rng.IntN(3))
		var q []string
		if n := rng.IntN(3); n > 0 {
			q = []string{fmt.Sprintf("q=%d", n)}
		}
		k := pathKey(dev, res, q...)
		switch op := rng.IntN(10); {
		case op < 4:
			c.Put(k, entry("payload", 60))
			want.Stores++
			if j := find(k); j >= 0 {
				model = slices.Delete(model, j, j+1)
			}
			model = slices.Insert(model, 0, mentry{k, dev + res, false})
			if len(model) > maxEntries {
				model = model[:maxEntries]
				want.Evictions++
			}
		case op < 8:
			_, fresh, ok := c.Get(k)
			j := find(k)
			switch {
			case j < 0:
				want.Misses++
			case model[j].stale:
				want.StaleHits++
			default:
				want.Hits++
			}
			if ok != (j >= 0) || (ok && fresh == model[j].stale) {
				t.Fatalf("op %d: Get(%s) = fresh %v ok %v; model index %d", i, k, fresh, ok, j)
			}
			if j >= 0 {
				m := model[j]
				model = slices.Insert(slices.Delete(model, j, j+1), 0, m)
			}
		default:
			n := c.Invalidate(dev, res)
			w := 0
			for j := range model {
				if model[j].res == dev+res {
					model[j].stale = true
					w++
				}
			}
			want.Invalidations += uint64(w)
			if n != w {
				t.Fatalf("op %d: Invalidate(%s, %s) = %d, want %d", i, dev, res, n, w)
			}
		}
	}
	st := c.Stats()
	want.Entries, want.Bytes = len(model), st.Bytes
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	for _, m := range model {
		if _, ok := c.Peek(m.k); !ok {
			t.Fatalf("%s missing", m.k)
		}
	}
}

func TestConcurrent(t *testing.T) {
	clk := newClock()
	c := cache.New(cache.Options{MaxEntries: 50, MaxBytes: 16 << 10, Now: clk.Now})
	const workers, ops = 8, 3000
	var wg sync.WaitGroup
	gets := make([]uint64, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range ops {
				k := pathKey(fmt.Sprintf("coap://d%d", rng.IntN(4)), fmt.Sprintf("/r%d", rng.IntN(30)))
				switch rng.IntN(6) {
				case 0:
					c.Put(k, entry(string(make([]byte, rng.IntN(1500))), uint32(rng.IntN(3))))
				case 1:
					c.Revalidated(k, 60)
				case 2:
					c.Invalidate(fmt.Sprintf("coap://d%d", rng.IntN(4)), "/r1")
				case 3:
					clk.Advance(time.Second)
					c.Stats()
				default:
					if e, _, ok := c.Get(k); ok {
						_ = len(e.Payload)
					}
					gets[w]++
				}
			}
		})
	}
	wg.Wait()
	st := c.Stats()
	var total uint64
	for _, g := range gets {
		total += g
	}
	if st.Hits+st.StaleHits+st.Misses != total {
		t.Fatalf("lookups %d+%d+%d, want %d", st.Hits, st.StaleHits, st.Misses, total)
	}
	if st.Entries > 50 || st.Bytes > 16<<10 || st.Entries != c.Len() || st.Bytes != c.Bytes() {
		t.Fatalf("bounds: %+v", st)
	}
}

func TestNewEntry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	buf := []byte("\xe1\xe2payload")
	var opts message.Options
	opts = opts.Add(message.ETag, buf[0:2]).
		SetObserve(12).
		Add(message.LocationPath, []byte("x")).
		SetContentFormat(message.AppJSON).
		SetMaxAge(30).
		SetUint(message.Block2, 0x0e).
		SetUint(message.Size2, 2048).
		SetEcho([]byte{9}).
		Add(65000, []byte("keep"))
	e := cache.NewEntry(message.Content, opts, buf[2:], now)
	if e.Code != message.Content || e.ContentFormat != int(message.AppJSON) || e.MaxAge != 30 ||
		!e.Stored.Equal(now) || string(e.ETag) != "\xe1\xe2" || string(e.Payload) != "payload" {
		t.Fatalf("entry %+v", e)
	}
	var ids []message.OptionID
	for _, o := range e.Options {
		ids = append(ids, o.ID)
	}
	if !slices.Equal(ids, []message.OptionID{message.LocationPath, 65000}) {
		t.Fatalf("options kept: %v", ids)
	}
	// The entry does not alias the decode buffer.
	for i := range buf {
		buf[i] = 0
	}
	if string(e.ETag) != "\xe1\xe2" || string(e.Payload) != "payload" || string(e.Options[1].Value) != "keep" {
		t.Fatalf("entry aliases the input: %+v", e)
	}
	// No Max-Age: 60; no Content-Format: -1; no payload: nil.
	d := cache.NewEntry(message.Content, nil, nil, now)
	if d.MaxAge != cache.DefaultMaxAge || d.ContentFormat != -1 || d.Payload != nil || d.ETag != nil || d.Options != nil {
		t.Fatalf("defaults %+v", d)
	}
}
