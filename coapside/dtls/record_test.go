package dtls

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// helloParts builds a DTLS 1.2 ClientHello datagram.
type helloParts struct {
	cookie   []byte
	exts     []byte // raw extensions block including its 2-byte length; nil = none
	hsType   byte   // default 1 (client_hello)
	epoch    uint16
	fragLen  int // override fragment_length; 0 = whole message
	truncate int // bytes cut from the end of the datagram
}

func buildHello(p helloParts) []byte {
	var body []byte
	body = append(body, 0xfe, 0xfd)             // client_version DTLS 1.2
	body = append(body, make([]byte, 32)...)    // random
	body = append(body, 0)                      // session_id length
	body = append(body, byte(len(p.cookie)))    // cookie length
	body = append(body, p.cookie...)            // cookie
	body = append(body, 0x00, 0x02, 0xc0, 0xa8) // cipher_suites: TLS_PSK_WITH_AES_128_CCM_8
	body = append(body, 0x01, 0x00)             // compression_methods: null
	body = append(body, p.exts...)

	typ := p.hsType
	if typ == 0 {
		typ = 1
	}
	fragLen := len(body)
	if p.fragLen > 0 {
		fragLen = p.fragLen
	}
	hs := []byte{typ}                  // msg_type
	hs = append(hs, u24(len(body))...) // length
	hs = append(hs, 0x00, 0x00)        // message_seq
	hs = append(hs, 0x00, 0x00, 0x00)  // fragment_offset
	hs = append(hs, u24(fragLen)...)   // fragment_length
	hs = append(hs, body[:min(fragLen, len(body))]...)

	rec := []byte{22, 0xfe, 0xfd}                             // handshake, DTLS 1.2
	rec = binary.BigEndian.AppendUint16(rec, p.epoch)         // epoch
	rec = append(rec, 0, 0, 0, 0, 0, 0)                       // sequence_number
	rec = binary.BigEndian.AppendUint16(rec, uint16(len(hs))) // length
	rec = append(rec, hs...)
	return rec[:len(rec)-p.truncate]
}

func u24(n int) []byte { return []byte{byte(n >> 16), byte(n >> 8), byte(n)} }

// extBlock builds an extensions block from (type, data) pairs.
func extBlock(exts ...[]byte) []byte {
	var inner []byte
	for _, e := range exts {
		inner = append(inner, e...)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(inner))), inner...)
}

func ext(typ uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

var (
	extEMS    = ext(0x0017, nil)                                         // extended_master_secret
	extCurves = ext(0x000a, []byte{0x00, 0x02, 0x00, 0x17})              // supported_groups: secp256r1
	coapGET   = []byte{0x40, 0x01, 0x12, 0x34, 0xb4, 't', 'e', 's', 't'} // CON GET /test
)

func TestInspectHello(t *testing.T) {
	appData := []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4}
	tests := []struct {
		name       string
		in         []byte
		wantErr    error
		wantCookie bool
		wantFrag   bool
	}{
		{name: "plaintext coap", in: coapGET, wantErr: ErrNotDTLS},
		{name: "empty", in: nil, wantErr: ErrNotDTLS},
		{name: "short", in: []byte{22, 0xfe, 0xfd}, wantErr: ErrNotDTLS},
		{name: "tls not dtls", in: append([]byte{22, 0x03, 0x03}, make([]byte, 20)...), wantErr: ErrNotDTLS},
		{name: "application data epoch 1", in: appData, wantErr: ErrNotDTLS},
		{name: "handshake at epoch 1", in: buildHello(helloParts{epoch: 1}), wantErr: ErrNotDTLS},
		{name: "hello no extensions", in: buildHello(helloParts{})},
		{name: "hello with extensions", in: buildHello(helloParts{exts: extBlock(extEMS, extCurves)})},
		{name: "hello with cookie", in: buildHello(helloParts{cookie: []byte("0123456789abcdef0123"), exts: extBlock(extEMS)}), wantCookie: true},
		{name: "fragment", in: buildHello(helloParts{exts: extBlock(extEMS), fragLen: 20}), wantFrag: true},
		{name: "record shorter than header says", in: buildHello(helloParts{exts: extBlock(extEMS), truncate: 3}), wantErr: ErrMalformedHello},
		{name: "server hello type", in: buildHello(helloParts{hsType: 2}), wantErr: ErrNotDTLS},
		{name: "client key exchange", in: buildHello(helloParts{hsType: 16}), wantErr: ErrNotDTLS},
		{name: "extensions length mismatch", in: buildHello(helloParts{exts: append(extBlock(extEMS), 0xff)}), wantErr: ErrMalformedHello},
		{name: "extension overruns block", in: buildHello(helloParts{exts: extBlock([]byte{0xab, 0xcd, 0xff, 0xff, 1, 2})}), wantErr: ErrMalformedHello},
		{name: "known extension garbage", in: buildHello(helloParts{exts: extBlock(ext(0x000a, []byte{0x00, 0x09, 0x00}))}), wantErr: ErrMalformedHello},
		{name: "duplicate extension", in: buildHello(helloParts{exts: extBlock(extEMS, extEMS)}), wantErr: ErrMalformedHello},
		{name: "half extension header", in: buildHello(helloParts{exts: extBlock([]byte{0x00, 0x17, 0x00})}), wantErr: ErrMalformedHello},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := inspectHello(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if info.cookie != tt.wantCookie || info.fragment != tt.wantFrag {
				t.Fatalf("info = %+v, want cookie=%v fragment=%v", info, tt.wantCookie, tt.wantFrag)
			}
		})
	}
}

func FuzzInspectHello(f *testing.F) {
	f.Add(coapGET)
	f.Add(buildHello(helloParts{}))
	f.Add(buildHello(helloParts{exts: extBlock(extEMS, extCurves)}))
	f.Add(buildHello(helloParts{cookie: []byte("cookie"), exts: extBlock(extEMS)}))
	f.Add(buildHello(helloParts{exts: extBlock([]byte{0xab, 0xcd, 0xff, 0xff, 1, 2})}))
	f.Add(buildHello(helloParts{exts: extBlock(extEMS), fragLen: 20}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if e := maxEpoch(b); e < recordEpoch(b) {
			t.Fatalf("maxEpoch %d < first epoch %d", e, recordEpoch(b))
		}
		info, err := inspectHello(b)
		if err != nil {
			if strings.Contains(err.Error(), "parser panic") {
				t.Fatalf("record parser panicked: %v", err)
			}
			if !errors.Is(err, ErrNotDTLS) && !errors.Is(err, ErrMalformedHello) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if !looksLikeDTLS(b) || recordEpoch(b) != 0 {
			t.Fatalf("accepted non-hello %x (info %+v)", b, info)
		}
	})
}

func TestMaxEpoch(t *testing.T) {
	ccs := []byte{20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 5, 0, 1, 1}          // ChangeCipherSpec, epoch 0
	fin := []byte{22, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 9, 9, 9, 9} // encrypted Finished, epoch 1
	bad := []byte{22, 0xfe, 0xfd, 0, 2, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1}    // length beyond datagram
	tests := []struct {
		name string
		in   []byte
		want int
	}{
		{"coap", coapGET, -1},
		{"hello", buildHello(helloParts{}), 0},
		{"ccs then finished", append(append([]byte(nil), ccs...), fin...), 1},
		{"truncated second record", append(append([]byte(nil), ccs...), bad...), 2},
		{"trailing garbage", append(append([]byte(nil), ccs...), 0x40, 1, 2), 0},
	}
	for _, tt := range tests {
		if got := maxEpoch(tt.in); got != tt.want {
			t.Errorf("%s: maxEpoch = %d, want %d", tt.name, got, tt.want)
		}
	}
}
