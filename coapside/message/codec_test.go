package message

import (
	"bytes"
	"errors"
	"testing"
)

func TestDecodeWire(t *testing.T) {
	tests := []struct {
		name string
		wire []byte
		want Message
	}{
		{
			name: "empty ACK",
			wire: []byte{
				0x60,       // Ver=1 T=ACK TKL=0
				0x00,       // 0.00 Empty
				0x12, 0x34, // Message ID 0x1234
			},
			want: Message{Type: Acknowledgement, Code: Empty, MessageID: 0x1234},
		},
		{
			name: "CON GET /temp with token",
			wire: []byte{
				0x42,       // Ver=1 T=CON TKL=2
				0x01,       // 0.01 GET
				0x00, 0x07, // Message ID 7
				0xab, 0xcd, // Token
				0xb4, 't', 'e', 'm', 'p', // delta 11 (Uri-Path) len 4
			},
			want: Message{Type: Confirmable, Code: GET, MessageID: 7, Token: []byte{0xab, 0xcd},
				Options: Options{{URIPath, []byte("temp")}}},
		},
		{
			name: "NON 2.05 with Content-Format and payload",
			wire: []byte{
				0x51,       // Ver=1 T=NON TKL=1
				0x45,       // 2.05 Content
				0xff, 0xff, // Message ID 65535
				0x01,       // Token
				0xc1, 0x32, // delta 12 (Content-Format) len 1 = 50 json
				0xff,     // payload marker
				'{', '}', // payload
			},
			want: Message{Type: NonConfirmable, Code: Content, MessageID: 0xffff, Token: []byte{1},
				Options: Options{{ContentFormat, []byte{50}}}, Payload: []byte("{}")},
		},
		{
			name: "repeated Uri-Path and Uri-Query with zero delta",
			wire: []byte{
				0x40, 0x02, 0x00, 0x01, // CON POST mid 1, no token
				0xb1, 'a', // Uri-Path "a"
				0x01, 'b', // delta 0 Uri-Path "b"
				0x43, 'x', '=', '1', // delta 4 (Uri-Query) "x=1"
				0x03, 'y', '=', '2', // delta 0 Uri-Query "y=2"
			},
			want: Message{Type: Confirmable, Code: POST, MessageID: 1, Options: Options{
				{URIPath, []byte("a")}, {URIPath, []byte("b")},
				{URIQuery, []byte("x=1")}, {URIQuery, []byte("y=2")}}},
		},
		{
			name: "extended delta 13 form (Size1 = 60) and empty uint",
			wire: []byte{
				0x40, 0x03, 0x00, 0x02, // CON PUT mid 2
				0xd0, 0x2f, // delta nibble 13, ext 47 -> 60 (Size1), len 0
			},
			want: Message{Type: Confirmable, Code: PUT, MessageID: 2, Options: Options{{Size1, []byte{}}}},
		},
		{
			name: "extended delta forms: Echo 252 (13) then option 552 (14)",
			wire: []byte{
				0x40, 0x01, 0x00, 0x03, // CON GET mid 3
				0xd1, 0xef, 0x09, // delta 13 ext 239 -> 252 (Echo), len 1, value 0x09
				0xe0, 0x00, 0x1f, // delta 14 ext 31 -> +300 = 552, len 0
			},
			want: Message{Type: Confirmable, Code: GET, MessageID: 3, Options: Options{
				{Echo, []byte{9}}, {552, []byte{}}}},
		},
		{
			name: "extended length 13 form",
			wire: append([]byte{
				0x40, 0x01, 0x00, 0x04, // CON GET mid 4
				0xbd, 0x02, // delta 11 (Uri-Path), length nibble 13, ext 2 -> 15
			}, []byte("abcdefghijklmno")...),
			want: Message{Type: Confirmable, Code: GET, MessageID: 4, Options: Options{{URIPath, []byte("abcdefghijklmno")}}},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			if err := m.Unmarshal(tt.wire); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			assertMessageEqual(t, &m, &tt.want)
			out, err := m.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			if !bytes.Equal(out, tt.wire) {
				t.Fatalf("re-encoded\n got % x\nwant % x", out, tt.wire)
			}
			if m.Size() != len(tt.wire) {
				t.Fatalf("Size = %d, want %d", m.Size(), len(tt.wire))
			}
		})
	}
}

func assertMessageEqual(t *testing.T, got, want *Message) {
	t.Helper()
	if got.Type != want.Type || got.Code != want.Code || got.MessageID != want.MessageID {
		t.Fatalf("header = %v %v %d, want %v %v %d", got.Type, got.Code, got.MessageID, want.Type, want.Code, want.MessageID)
	}
	if !bytes.Equal(got.Token, want.Token) {
		t.Fatalf("token = %x, want %x", got.Token, want.Token)
	}
	if len(got.Options) != len(want.Options) {
		t.Fatalf("options = %v, want %v", got.Options, want.Options)
	}
	for i := range got.Options {
		if got.Options[i].ID != want.Options[i].ID || !bytes.Equal(got.Options[i].Value, want.Options[i].Value) {
			t.Fatalf("option %d = %v %q, want %v %q", i, got.Options[i].ID, got.Options[i].Value, want.Options[i].ID, want.Options[i].Value)
		}
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Fatalf("payload = %q, want %q", got.Payload, want.Payload)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		wire    []byte
		wantErr error
		// header fields still decoded, so the message layer can RST a CON
		wantMID uint16
	}{
		{"nil", nil, ErrTruncatedHeader, 0},
		{"truncated header 3 bytes", []byte{0x40, 0x01, 0x00}, ErrTruncatedHeader, 0},
		{"version 0", []byte{0x00, 0x01, 0x00, 0x01}, ErrVersion, 1},
		{"version 2", []byte{0x80, 0x01, 0x00, 0x01}, ErrVersion, 1},
		{"TKL 9", []byte{0x49, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8, 9}, ErrTokenLength, 5},
		{"TKL 15", []byte{0x4f, 0x01, 0x00, 0x06}, ErrTokenLength, 6},
		{"token past end", []byte{0x44, 0x01, 0x00, 0x07, 0xaa, 0xbb}, ErrTruncated, 7},
		{"option length past end", []byte{0x40, 0x01, 0x00, 0x08, 0xb5, 'a', 'b'}, ErrTruncated, 8},
		{"extended delta byte missing", []byte{0x40, 0x01, 0x00, 0x09, 0xd0}, ErrTruncated, 9},
		{"extended 14 delta byte missing", []byte{0x40, 0x01, 0x00, 0x09, 0xe0, 0x01}, ErrTruncated, 9},
		{"extended length byte missing", []byte{0x40, 0x01, 0x00, 0x0a, 0xbd}, ErrTruncated, 10},
		{"payload marker, empty payload", []byte{0x40, 0x02, 0x00, 0x0b, 0xff}, ErrEmptyPayload, 11},
		{"reserved delta nibble 15", []byte{0x40, 0x01, 0x00, 0x0c, 0xf1, 'a'}, ErrOptionNibble, 12},
		{"reserved length nibble 15", []byte{0x40, 0x01, 0x00, 0x0d, 0xbf, 'a'}, ErrOptionNibble, 13},
		{"option number past 65535", []byte{0x40, 0x01, 0x00, 0x0e, 0xe0, 0xff, 0xff, 0xe0, 0xff, 0xff}, ErrOptionNumber, 14},
		{"empty message with token", []byte{0x41, 0x00, 0x00, 0x0f, 0x01}, ErrEmptyMessage, 15},
		{"empty message with payload", []byte{0x60, 0x00, 0x00, 0x10, 0xff, 0x01}, ErrEmptyMessage, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			err := m.Unmarshal(tt.wire)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v does not wrap ErrMalformed", err)
			}
			if m.MessageID != tt.wantMID {
				t.Fatalf("MessageID = %d, want %d", m.MessageID, tt.wantMID)
			}
			if _, err := Decode(tt.wire); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		m    Message
		want error
	}{
		{"token 9 bytes", Message{Code: GET, Token: make([]byte, 9)}, ErrTokenLength},
		{"type 4", Message{Type: 4, Code: GET}, ErrInvalidType},
		{"empty with payload", Message{Code: Empty, Payload: []byte{1}}, ErrEmptyMessage},
		{"option too long", Message{Code: GET, Options: Options{{URIPath, make([]byte, maxOptionLen+1)}}}, ErrOptionTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.m.MarshalBinary(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEncodeSortsOptions(t *testing.T) {
	m := Message{Type: Confirmable, Code: GET, MessageID: 1, Options: Options{
		{URIQuery, []byte("q")}, {URIPath, []byte("a")}, {URIPath, []byte("b")}, {URIHost, []byte("h")},
	}}
	out, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x40, 0x01, 0x00, 0x01, // CON GET mid 1
		0x31, 'h', // Uri-Host (3)
		0x81, 'a', // +8 Uri-Path
		0x01, 'b', // +0 Uri-Path, order kept
		0x41, 'q', // +4 Uri-Query
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("got % x want % x", out, want)
	}
	if m.Options[0].ID != URIQuery {
		t.Fatal("encoding reordered the caller's options in place")
	}
}

func TestEncodeLongOption(t *testing.T) {
	val := bytes.Repeat([]byte{'x'}, 300) // length nibble 14 with ext 31
	m := Message{Type: NonConfirmable, Code: POST, MessageID: 9, Options: Options{{ProxyURI, val}}, Payload: []byte("p")}
	out, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// 0xde: delta 13 (ext 35-13=22), length 14 (ext 300-269=31)
	if !bytes.Equal(out[4:8], []byte{0xde, 22, 0x00, 31}) {
		t.Fatalf("option header % x", out[4:8])
	}
	got, err := Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	assertMessageEqual(t, got, &m)
}

func TestUnmarshalReuseDoesNotLeakOptions(t *testing.T) {
	var m Message
	if err := m.Unmarshal([]byte{0x40, 0x01, 0, 1, 0xb1, 'a', 0x01, 'b'}); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmarshal([]byte{0x40, 0x01, 0, 2}); err != nil {
		t.Fatal(err)
	}
	if len(m.Options) != 0 || m.Token != nil || m.Payload != nil {
		t.Fatalf("stale fields after reuse: %+v", m)
	}
}

func TestClone(t *testing.T) {
	wire := []byte{0x41, 0x45, 0, 1, 0x07, 0xb1, 'a', 0xff, 'p'}
	m, err := Decode(wire)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Clone()
	for i := range wire {
		wire[i] = 0
	}
	if c.Token[0] != 7 || string(c.Options[0].Value) != "a" || string(c.Payload) != "p" {
		t.Fatalf("clone aliases input: %+v", c)
	}
}
