package dtls

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pion/dtls/v2/pkg/protocol"
	"github.com/pion/dtls/v2/pkg/protocol/handshake"
	"github.com/pion/dtls/v2/pkg/protocol/recordlayer"
)

// verifyRequest builds a HelloVerifyRequest datagram with pion's encoder, as
// the server sends it.
func verifyRequest(t testing.TB, cookie []byte) []byte {
	t.Helper()
	rec := &recordlayer.RecordLayer{
		Header: recordlayer.Header{Version: protocol.Version1_2},
		Content: &handshake.Handshake{Message: &handshake.MessageHelloVerifyRequest{
			Version: protocol.Version1_2,
			Cookie:  cookie,
		}},
	}
	b, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHelloCookie(t *testing.T) {
	cookie := []byte("0123456789abcdef0123")
	withSID := buildHello(helloParts{cookie: cookie, exts: extBlock(extEMS)})
	// Give it a 4-byte session_id: the cookie moves behind it.
	body := withSID[recordHeaderLen+handshakeHeaderLen:]
	sid := append(append(append([]byte(nil), body[:34]...), 4, 9, 9, 9, 9), body[35:]...)
	tests := []struct {
		name   string
		in     []byte
		want   []byte
		wantOK bool
	}{
		{name: "no cookie", in: buildHello(helloParts{exts: extBlock(extEMS)}), want: []byte{}, wantOK: true},
		{name: "cookie", in: withSID, want: cookie, wantOK: true},
		{name: "cookie after session id", in: rebuild(t, withSID, sid), want: cookie, wantOK: true},
		{name: "first fragment holding the cookie", in: buildHello(helloParts{cookie: cookie, exts: extBlock(extEMS), fragLen: 60}), want: cookie, wantOK: true},
		{name: "first fragment too short", in: buildHello(helloParts{cookie: cookie, fragLen: 40}), wantOK: false},
		{name: "epoch 1", in: buildHello(helloParts{cookie: cookie, epoch: 1}), wantOK: false},
		{name: "server hello", in: buildHello(helloParts{cookie: cookie, hsType: 2}), wantOK: false},
		{name: "truncated", in: buildHello(helloParts{cookie: cookie, truncate: 60}), wantOK: false},
		{name: "coap", in: coapGET, wantOK: false},
		{name: "verify request", in: verifyRequest(t, cookie), wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := helloCookie(tt.in)
			if ok != tt.wantOK || (ok && !bytes.Equal(got, tt.want)) {
				t.Fatalf("helloCookie = %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// rebuild returns hello with its ClientHello body replaced by body, lengths
// fixed up.
func rebuild(t testing.TB, hello, body []byte) []byte {
	t.Helper()
	out := append([]byte(nil), hello[:recordHeaderLen+handshakeHeaderLen]...)
	out = append(out, body...)
	binary.BigEndian.PutUint16(out[11:13], uint16(handshakeHeaderLen+len(body)))
	hs := out[recordHeaderLen:]
	copy(hs[1:4], u24(len(body)))
	copy(hs[9:12], u24(len(body)))
	if _, err := inspectHello(out); err != nil {
		t.Fatalf("rebuilt hello: %v", err)
	}
	return out
}

func TestVerifyRequestCookie(t *testing.T) {
	cookie := []byte("0123456789abcdef0123")
	hvr := verifyRequest(t, cookie)
	if got, ok := verifyRequestCookie(hvr); !ok || !bytes.Equal(got, cookie) {
		t.Fatalf("verifyRequestCookie = %q, %v", got, ok)
	}
	for name, b := range map[string][]byte{
		"empty cookie": verifyRequest(t, nil),
		"client hello": buildHello(helloParts{cookie: cookie}),
		"truncated":    hvr[:len(hvr)-1],
		"coap":         coapGET,
	} {
		if got, ok := verifyRequestCookie(b); ok {
			t.Errorf("%s: got cookie %q", name, got)
		}
	}
}

// FuzzHelloCookie checks the cookie readers against hostile bytes: no
// panic, a cookie always inside the datagram, and agreement with the full
// ClientHello parser wherever that one accepts the datagram.
func FuzzHelloCookie(f *testing.F) {
	cookie := []byte("0123456789abcdef0123")
	f.Add(buildHello(helloParts{}))
	f.Add(buildHello(helloParts{cookie: cookie, exts: extBlock(extEMS, extCurves)}))
	f.Add(buildHello(helloParts{cookie: cookie, exts: extBlock(extEMS), fragLen: 60}))
	f.Add(buildHello(helloParts{cookie: cookie, truncate: 30}))
	f.Add(verifyRequest(f, cookie))
	f.Add(coapGET)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, ok := helloCookie(b)
		if ok && len(c) > 255 {
			t.Fatalf("cookie of %d bytes", len(c))
		}
		if hv, hok := verifyRequestCookie(b); hok && (len(hv) == 0 || ok) {
			t.Fatalf("datagram read as both hello (%v) and verify request (%q)", ok, hv)
		}
		if hasCookie(b) != (ok && len(c) > 0) {
			t.Fatal("hasCookie disagrees with helloCookie")
		}
		info, err := inspectHello(b)
		if err != nil {
			if !errors.Is(err, ErrNotDTLS) && !errors.Is(err, ErrMalformedHello) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if !info.fragment && (!ok || info.cookie != (len(c) > 0)) {
			t.Fatalf("inspectHello cookie=%v, helloCookie %q %v", info.cookie, c, ok)
		}
	})
}
