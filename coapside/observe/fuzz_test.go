package observe

import (
	"testing"
	"time"
)

// FuzzTracker plays a server emitting consecutive sequence numbers from a
// random start (so wrap-around happens) through a network that duplicates
// and reorders notifications (by fewer than 200 places), all inside the 128-second
// freshness window. The tracker must accept exactly the notifications newer
// than every one accepted before, never detect a reset, and flag repeats of
// the latest accepted one as duplicates.
func FuzzTracker(f *testing.F) {
	f.Add(uint32(0), []byte{0, 0, 0, 1, 2, 3})
	f.Add(uint32(SeqMask-2), []byte{0, 0, 0, 0, 0x41, 0x82, 0x03})
	f.Add(uint32(1<<23), []byte{0x07, 0x00, 0xc1, 0x42})
	f.Fuzz(func(t *testing.T, startSeq uint32, ops []byte) {
		const window = 16
		startSeq &= SeqMask
		var tr Tracker
		now := time.Unix(1e9, 0)
		begin := now
		produced := 0      // notifications the server has emitted
		var inFlight []int // indices emitted but not yet delivered
		latest := -1       // index of the latest accepted notification
		seqOf := func(i int) uint32 { return (startSeq + uint32(i)) & SeqMask }

		for _, op := range ops {
			// Emit 0..3 new notifications, keeping at most window in flight.
			for range int(op & 3) {
				if len(inFlight) < window {
					inFlight = append(inFlight, produced)
					produced++
				}
			}
			now = now.Add(time.Duration(op>>6) * 10 * time.Millisecond)
			if now.Sub(begin) > 100*time.Second {
				return
			}
			var idx int
			switch {
			case op&0x20 != 0 && latest >= 0:
				// Duplicate or old straggler: redeliver something accepted
				// recently.
				idx = latest - int(op>>2&3)
				if idx < 0 {
					idx = latest
				}
			case len(inFlight) > 0:
				// A notification overtaken by 200 later ones is lost: the
				// network reorders, but not without bound.
				for len(inFlight) > 0 && produced-inFlight[0] > 200 {
					inFlight = inFlight[1:]
				}
				if len(inFlight) == 0 {
					continue
				}
				// Deliver one of the pending notifications, maybe reordered.
				k := int(op>>2&7) % len(inFlight)
				idx = inFlight[k]
				inFlight = append(inFlight[:k], inFlight[k+1:]...)
			default:
				continue
			}
			v := tr.Check(seqOf(idx), now)
			switch {
			case v == Reset:
				t.Fatalf("index %d (seq %d): reset detected from reordering", idx, seqOf(idx))
			case idx > latest:
				if !v.Accepted() {
					t.Fatalf("index %d (seq %d) newer than %d but %v", idx, seqOf(idx), latest, v)
				}
				latest = idx
			case idx == latest:
				if v != Duplicate {
					t.Fatalf("repeat of latest %d judged %v", idx, v)
				}
			default:
				if v.Accepted() {
					t.Fatalf("index %d older than %d accepted as %v", idx, latest, v)
				}
			}
		}
	})
}

// FuzzNewer checks the algebra of the sequence rule: antisymmetry, and that
// every step forward of less than 2^23 is newer.
func FuzzNewer(f *testing.F) {
	f.Add(uint32(0), uint32(1))
	f.Add(uint32(SeqMask), uint32(1<<23))
	f.Fuzz(func(t *testing.T, a, k uint32) {
		a &= SeqMask
		k &= SeqMask
		b := (a + k) & SeqMask
		if Newer(a, b) && Newer(b, a) {
			t.Fatalf("both %d>%d and %d>%d", a, b, b, a)
		}
		if want := k != 0 && k < 1<<23; Newer(a, b) != want {
			t.Fatalf("Newer(%d, %d) = %v, step %d", a, b, Newer(a, b), k)
		}
	})
}
