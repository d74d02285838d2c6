package message

import "testing"

// typicalRequest is a CON GET with a 4-byte token and four options
// (Uri-Host, two Uri-Path, Accept).
func typicalRequest() *Message {
	m := &Message{Type: Confirmable, Code: GET, MessageID: 0x1234, Token: []byte{1, 2, 3, 4}}
	m.Options = m.Options.SetString(URIHost, "device-17").SetPath("/sensors/temp").SetUint(Accept, uint32(AppJSON))
	return m
}

func BenchmarkUnmarshal(b *testing.B) {
	wire, err := typicalRequest().MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	var m Message
	b.ReportAllocs()
	b.SetBytes(int64(len(wire)))
	for b.Loop() {
		if err := m.Unmarshal(wire); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	wire, err := typicalRequest().MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(wire)))
	for b.Loop() {
		if _, err := Decode(wire); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendBinary(b *testing.B) {
	m := typicalRequest()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = m.AppendBinary(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func TestUnmarshalTypicalRequestDoesNotAllocate(t *testing.T) {
	wire, err := typicalRequest().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var m Message
	allocs := testing.AllocsPerRun(100, func() {
		if err := m.Unmarshal(wire); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Unmarshal allocates %.0f times", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := Decode(wire); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Fatalf("Decode allocates %.0f times, want only the message struct", allocs)
	}
}
