package coapside

import (
	"bytes"
	"net/netip"
	"reflect"
	"runtime"
	"testing"
	"time"
)

// hasPointers reports whether values of t hold pointers the garbage
// collector must scan.
func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return false
	default:
		return true
	}
}

// The ring and the index of UDP peers are the bulk of a server's live
// heap; without pointers the garbage collector does not scan them.
func TestDedupTableHoldsNoPointers(t *testing.T) {
	d := newDedupTable(4, &Stats{})
	if ty := reflect.TypeOf(d.ring).Elem(); hasPointers(ty) {
		t.Errorf("ring slot %v holds pointers", ty)
	}
	mt := reflect.TypeOf(d.index)
	if hasPointers(mt.Key()) || hasPointers(mt.Elem()) {
		t.Errorf("index %v holds pointers", mt)
	}
}

func TestDedupTableLongRepliesAndOtherPeers(t *testing.T) {
	var st Stats
	d := newDedupTable(3, &st)
	now := time.Unix(1000, 0)
	long := bytes.Repeat([]byte{0xab}, 3*dedupInline)
	zoned := peerKey{ap: netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth0"), 5683)}
	other := peerKey{str: "tcp|127.0.0.1:5683"}
	v4 := peerKey{ap: netip.MustParseAddrPort("10.0.0.1:5683")}
	// ::ffff:10.0.0.1 is kept apart from 10.0.0.1 (peers are unmapped before).
	mapped := peerKey{ap: netip.MustParseAddrPort("[::ffff:10.0.0.1]:5683")}
	replies := map[peerKey][]byte{zoned: long, other: {1, 2}, v4: long[:dedupInline]}
	for _, p := range []peerKey{zoned, other, v4} {
		ref, res, _ := d.begin(dedupKey{peer: p, mid: 7}, now, time.Minute, nil)
		if res != dedupNew {
			t.Fatalf("%v: first = %v", p, res)
		}
		d.complete(ref, replies[p])
	}
	for _, p := range []peerKey{zoned, other, v4} {
		_, res, got := d.begin(dedupKey{peer: p, mid: 7}, now, time.Minute, nil)
		if res != dedupDupReplay || !bytes.Equal(got, replies[p]) {
			t.Fatalf("%v: duplicate = %v %x, want replay of %x", p, res, got, replies[p])
		}
	}
	if d.len() != 3 {
		t.Fatalf("len = %d, want 3", d.len())
	}
	// A new peer evicts the zoned one, the oldest; its slot's next reply is short.
	ref, res, _ := d.begin(dedupKey{peer: mapped, mid: 7}, now, time.Minute, nil)
	if res != dedupNew {
		t.Fatalf("mapped address taken for its IPv4 form: %v", res)
	}
	d.complete(ref, []byte{9})
	if _, res, got := d.begin(dedupKey{peer: mapped, mid: 7}, now, time.Minute, nil); res != dedupDupReplay || !bytes.Equal(got, []byte{9}) {
		t.Fatalf("short reply in a reused slot = %v %x", res, got)
	}
	if _, res, _ := d.begin(dedupKey{peer: zoned, mid: 7}, now, time.Minute, nil); res != dedupNew {
		t.Fatalf("evicted zoned peer still found: %v", res)
	}
	if d.len() != 3 || len(d.otherKeys) != len(d.other) {
		t.Fatalf("len = %d, other %d, otherKeys %d", d.len(), len(d.other), len(d.otherKeys))
	}
}

// fillDedup fills d with completed exchanges of distinct peers, as a busy
// server's table is.
func fillDedup(d *dedupTable, now time.Time) {
	reply := make([]byte, 12)
	for i := range len(d.ring) {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 5683)
		ref, _, _ := d.begin(dedupKey{peer: peerKey{ap: ap}, mid: uint16(i)}, now, time.Hour, nil)
		d.complete(ref, reply)
	}
}

// BenchmarkDedupGC is one full garbage collection with a full server-sized
// table (DefaultDedupCapacity exchanges, 12-byte replies) live.
func BenchmarkDedupGC(b *testing.B) {
	d := newDedupTable(DefaultDedupCapacity, &Stats{})
	fillDedup(d, time.Unix(1000, 0))
	runtime.GC()
	b.ResetTimer()
	for b.Loop() {
		runtime.GC()
	}
	runtime.KeepAlive(d)
}

// BenchmarkDedupBeginComplete is one new exchange recorded and its reply
// stored in a full table.
func BenchmarkDedupBeginComplete(b *testing.B) {
	d := newDedupTable(DefaultDedupCapacity, &Stats{})
	now := time.Unix(1000, 0)
	fillDedup(d, now)
	reply := make([]byte, 12)
	key := dedupKey{peer: peerKey{ap: netip.MustParseAddrPort("10.1.0.1:5683")}}
	for b.Loop() {
		key.mid++
		ref, _, _ := d.begin(key, now, time.Hour, nil)
		d.complete(ref, reply)
	}
}
