package cache_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/cache"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// benchOpts is a typical proxied GET: path, query, Accept, and options
// outside the key (Observe-less, Block2 from a reassembling client).
func benchOpts(i int) message.Options {
	var o message.Options
	o = o.SetPath(fmt.Sprintf("/devices/sensor-%d/temp", i)).
		AddString(message.URIQuery, "unit=C").
		SetAccept(message.AppJSON).
		SetUint(message.Block2, 0x06)
	return o
}

func BenchmarkKeyOf(b *testing.B) {
	opts := benchOpts(1)
	b.ReportAllocs()
	for b.Loop() {
		_ = cache.KeyOf(message.GET, target, opts, nil)
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := cache.New(cache.Options{})
	keys := make([]cache.Key, 1000)
	for i := range keys {
		keys[i] = cache.KeyOf(message.GET, target, benchOpts(i), nil)
		c.Put(keys[i], entry("21.5", 3600))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, fresh, ok := c.Get(keys[i%len(keys)]); !ok || !fresh {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkGetHitParallel measures the single mutex under contention.
func BenchmarkGetHitParallel(b *testing.B) {
	c := cache.New(cache.Options{})
	keys := make([]cache.Key, 1000)
	for i := range keys {
		keys[i] = cache.KeyOf(message.GET, target, benchOpts(i), nil)
		c.Put(keys[i], entry("21.5", 3600))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c.Get(keys[i%len(keys)])
			i++
		}
	})
}

// BenchmarkPut stores into a full cache, so every Put is of a new key and
// evicts one. Keys and entries are cycled: an entry has been evicted long
// before it is stored again.
func BenchmarkPut(b *testing.B) {
	const n = 1 << 14
	c := cache.New(cache.Options{MaxEntries: n / 2})
	keys := make([]cache.Key, n)
	entries := make([]*cache.Entry, n)
	now := time.Now()
	for i := range keys {
		keys[i] = cache.KeyOf(message.GET, target, benchOpts(i), nil)
		entries[i] = &cache.Entry{Code: message.Content, ContentFormat: 50, Payload: []byte("21.5"), MaxAge: 60, Stored: now}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Put(keys[i%n], entries[i%n])
		i++
	}
}

// BenchmarkPutReplace stores over an existing entry, as a refresh does.
func BenchmarkPutReplace(b *testing.B) {
	c := cache.New(cache.Options{})
	k := cache.KeyOf(message.GET, target, benchOpts(1), nil)
	e := &cache.Entry{Code: message.Content, ContentFormat: 50, Payload: []byte("21.5"), MaxAge: 60, Stored: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		c.Put(k, e)
	}
}
