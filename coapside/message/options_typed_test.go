package message

import (
	"bytes"
	"testing"
)

func TestTypedAccessorsRoundTripOnTheWire(t *testing.T) {
	var o Options
	o = o.AddIfMatch([]byte{1, 2}).AddIfMatch(nil)
	o = o.SetHost("example.net").SetETag([]byte{0xee}).SetIfNoneMatch().SetObserve(0x1234567)
	o = o.SetPort(5690).SetPath("/a").SetContentFormat(AppCBOR).SetMaxAge(30)
	o = o.AddString(URIQuery, "q").SetAccept(AppSenMLJSON)
	o = o.AddString(LocationQuery, "lq1").AddString(LocationQuery, "lq2")
	o = o.SetUint(Block2, 0x1e).SetUint(Block1, 0x08).SetUint(Size2, 4096).SetUint(Size1, 300)
	o = o.SetString(ProxyScheme, "coap").SetEcho([]byte{9, 9}).AddRequestTag([]byte{7}).AddRequestTag(nil)
	m := &Message{Type: Confirmable, Code: PUT, MessageID: 1, Options: o}
	wire, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(wire)
	if err != nil {
		t.Fatal(err)
	}
	g := d.Options
	if im := g.IfMatch(); len(im) != 2 || !bytes.Equal(im[0], []byte{1, 2}) || len(im[1]) != 0 {
		t.Fatalf("If-Match %x", im)
	}
	if h, ok := g.Host(); !ok || h != "example.net" {
		t.Fatalf("Host %q", h)
	}
	if e := g.ETags(); len(e) != 1 || e[0][0] != 0xee {
		t.Fatalf("ETags %x", e)
	}
	if !g.IfNoneMatch() {
		t.Fatal("If-None-Match")
	}
	if v, ok := g.Observe(); !ok || v != 0x234567 {
		t.Fatalf("Observe %x (24-bit)", v)
	}
	if p, ok := g.Port(); !ok || p != 5690 {
		t.Fatalf("Port %d", p)
	}
	if cf, _ := g.ContentFormat(); cf != AppCBOR || g.MaxAge() != 30 {
		t.Fatal("Content-Format/Max-Age")
	}
	if a, _ := g.Accept(); a != AppSenMLJSON {
		t.Fatal("Accept")
	}
	if lq := g.LocationQueries(); len(lq) != 2 || lq[1] != "lq2" {
		t.Fatalf("Location-Query %q", lq)
	}
	if v, ok := g.Block2Value(); !ok || v != 0x1e {
		t.Fatal("Block2")
	}
	if v, ok := g.Block1Value(); !ok || v != 0x08 {
		t.Fatal("Block1")
	}
	if v, ok := g.Size2(); !ok || v != 4096 {
		t.Fatal("Size2")
	}
	if v, ok := g.Size1(); !ok || v != 300 {
		t.Fatal("Size1")
	}
	if s, ok := g.ProxyScheme(); !ok || s != "coap" {
		t.Fatal("Proxy-Scheme")
	}
	if _, ok := g.ProxyURI(); ok {
		t.Fatal("Proxy-Uri present")
	}
	if e, ok := g.Echo(); !ok || !bytes.Equal(e, []byte{9, 9}) {
		t.Fatal("Echo")
	}
	if rt := g.RequestTags(); len(rt) != 2 || rt[0][0] != 7 || len(rt[1]) != 0 {
		t.Fatalf("Request-Tag %x", rt)
	}
	if _, bad := g.UnrecognizedCritical(nil); bad {
		t.Fatal("registered options reported as unrecognized")
	}
}
