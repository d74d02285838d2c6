package message

import (
	"bytes"
	"testing"
)

func fuzzSeeds(f *testing.F) {
	f.Add([]byte{0x60, 0x00, 0x12, 0x34})
	f.Add([]byte{0x42, 0x01, 0x00, 0x07, 0xab, 0xcd, 0xb4, 't', 'e', 'm', 'p'})
	f.Add([]byte{0x51, 0x45, 0xff, 0xff, 0x01, 0xc1, 0x32, 0xff, '{', '}'})
	f.Add([]byte{0x40, 0x01, 0x00, 0x03, 0xd1, 0xef, 0x09, 0xe0, 0x00, 0x1f})
	f.Add([]byte{0x40, 0x01, 0x00, 0x0c, 0xf1, 'a'})
	f.Add([]byte{0x4f, 0x01, 0x00, 0x06})
	f.Add([]byte{0x40, 0x02, 0x00, 0x0b, 0xff})
}

// FuzzDecode checks that arbitrary bytes never panic the decoder and that any
// accepted message re-encodes.
func FuzzDecode(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Message
		if err := m.Unmarshal(data); err != nil {
			return
		}
		if _, err := m.MarshalBinary(); err != nil {
			t.Fatalf("decoded message does not encode: %v (% x)", err, data)
		}
		_ = m.String()
		_, _ = m.Options.UnrecognizedCritical(nil)
	})
}

// FuzzRoundTrip checks that decode∘encode is stable: encoding a decoded message
// and decoding it again yields the same message and the same bytes.
func FuzzRoundTrip(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		m1, err := Decode(data)
		if err != nil {
			return
		}
		b1, err := m1.MarshalBinary()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		m2, err := Decode(b1)
		if err != nil {
			t.Fatalf("re-decode of % x: %v", b1, err)
		}
		assertMessageEqual(t, m2, m1)
		b2, err := m2.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(b1, b2) {
			t.Fatalf("unstable encoding\n% x\n% x", b1, b2)
		}
		// Decoded options are in wire order, which is sorted.
		if !m1.Options.sorted() {
			t.Fatalf("decoded options unsorted: %v", m1.Options)
		}
	})
}
