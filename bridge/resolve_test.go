package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
	"github.com/coap-mqtt/bridge/e2e/testkit"
	"github.com/coap-mqtt/bridge/rules"
	"golang.org/x/net/dns/dnsmessage"
)

// dualStackHost is a host name with an IPv4 and an IPv6 address, served by
// a DNS server of the test's own that the process's resolver is pointed
// at for the test's duration; the hosts file may not list ::1 for
// localhost.
type dualStackHost struct {
	name string
	// first is the address the resolver ranks first (RFC 6724).
	first netip.Addr
	// lookups counts the A queries for name.
	lookups atomic.Int64
}

// newDualStackHost starts the DNS server answering name with 127.0.0.1
// and ::1 and makes net.DefaultResolver ask it; both end with the test.
// The test must not run in parallel with others.
func newDualStackHost(t *testing.T) *dualStackHost {
	t.Helper()
	h := &dualStackHost{name: "dual-stack.test"}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return // closed by the cleanup
			}
			if resp, ok := h.answer(buf[:n]); ok {
				conn.WriteTo(resp, from)
			}
		}
	}()
	saved := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", conn.LocalAddr().String())
	}}
	t.Cleanup(func() {
		net.DefaultResolver = saved
		conn.Close()
		<-done
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h.name)
	if err != nil || len(addrs) != 2 {
		t.Fatalf("test resolver: %v %v", addrs, err)
	}
	h.first = addrs[0].Unmap()
	t.Logf("%s resolves to %v", h.name, addrs)
	h.lookups.Store(0)
	return h
}

// answer builds the response to a DNS query: A 127.0.0.1 and AAAA ::1 for
// the name, NXDOMAIN for any other.
func (h *dualStackHost) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, false
	}
	b.Question(q)
	b.StartAnswers()
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
	switch {
	case q.Name.String() != h.name+".":
		b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: hdr.ID, Response: true, RCode: dnsmessage.RCodeNameError})
		b.StartQuestions()
		b.Question(q)
	case q.Type == dnsmessage.TypeA:
		h.lookups.Add(1)
		b.AResource(rh, dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}})
	case q.Type == dnsmessage.TypeAAAA:
		b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: netip.IPv6Loopback().As16()})
	}
	resp, err := b.Finish()
	return resp, err == nil
}

// TestObserveDualStackHostResolvedOnce: a device registered by a host name
// with an IPv4 and an IPv6 address, listening on the family the resolver
// ranks first only, is observed over coap and coaps. The name is resolved
// once per observation, and the DTLS handshake and the observation go to
// that one address.
func TestObserveDualStackHostResolvedOnce(t *testing.T) {
	t.Run("coap", func(t *testing.T) {
		h := newDualStackHost(t)
		dev := startObservableDevice(t, net.JoinHostPort(h.first.String(), "0"), 60)
		dev.value.Store(7)
		_, port, _ := net.SplitHostPort(dev.addr.String())
		tb := startBridge(t, fmt.Sprintf(`
[[device]]
name = "d1"
url  = "coap://%s:%s"

[[observe]]
name    = "temp"
devices = ["d1"]
paths   = ["/sensors/temp"]
topic   = "temp/{device}"
`, h.name, port), nil)
		temps := subscribe(t, tb.MQTTAddr(), "temp/#", 0)
		testkit.Eventually(t, 10*time.Second, "observer on the device", func() bool { return dev.obs.Observers("/sensors/temp") == 1 })
		dev.set(8)
		temps.waitFor(t, 5*time.Second, "temp/d1", "8")
		if n := h.lookups.Load(); n != 1 {
			t.Fatalf("%s resolved %d times for one observation, want 1", h.name, n)
		}
	})
	t.Run("coaps", func(t *testing.T) {
		h := newDualStackHost(t)
		psk := dtls.NewPSKStore(map[string]dtls.Secret{"bridge": keys.Secret("device-key")})
		conn, err := dtls.Listen("udp", net.JoinHostPort(h.first.String(), "0"), dtls.ServerConfig{PSK: psk})
		if err != nil {
			t.Fatal(err)
		}
		mux := coapside.NewServeMux()
		obs := runObserveServer(t)
		var temp atomic.Int64
		mux.Handle("GET /temp", obs.Observable(coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
			w.Write([]byte(strconv.FormatInt(temp.Load(), 10)))
		})))
		srv := &coapside.Server{Handler: mux}
		go srv.Serve(conn)
		t.Cleanup(func() { srv.Close() })
		_, port, _ := net.SplitHostPort(conn.LocalAddr().String())
		tb := startBridge(t, fmt.Sprintf(`
[[device]]
name         = "secure-1"
url          = "coaps://%s:%s"
psk_identity = "bridge"
psk          = "device-key"

[[observe]]
name    = "temp"
devices = ["secure-1"]
paths   = ["/temp"]
topic   = "temp/{device}"
`, h.name, port), nil)
		temps := subscribe(t, tb.MQTTAddr(), "temp/#", 0)
		testkit.Eventually(t, 10*time.Second, "observer over DTLS", func() bool { return obs.Observers("/temp") == 1 })
		temp.Store(31)
		obs.Notify("/temp")
		temps.waitFor(t, 5*time.Second, "temp/secure-1", "31")
		if n := h.lookups.Load(); n != 1 {
			t.Fatalf("%s resolved %d times for one observation, want 1", h.name, n)
		}
	})
}

// TestDeviceRequestOptionsAndPeer: a watch's request carries the device's
// Uri-Host and Uri-Port and one Uri-Path per segment, sent as they are,
// and its peer is the first address of one lookup.
func TestDeviceRequestOptionsAndPeer(t *testing.T) {
	a, err := uri.ParseAuthority(false, "Sensor.example:5699")
	if err != nil {
		t.Fatal(err)
	}
	dev := &rules.Device{Name: "d1", Host: a.Addr(), Options: a.Options()}
	req, err := deviceRequest(dev, "/sensors/a b%20c")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := req.Options.String(message.URIHost); h != "sensor.example" {
		t.Errorf("Uri-Host %q", h)
	}
	if p, _ := req.Options.Uint(message.URIPort); p != 5699 {
		t.Errorf("Uri-Port %d", p)
	}
	if got := req.Options.Strings(message.URIPath); !slices.Equal(got, []string{"sensors", "a b%20c"}) {
		t.Errorf("Uri-Path %q", got)
	}
	if len(dev.Options) != 2 {
		t.Errorf("the device's own options changed: %v", dev.Options)
	}
	d := newDeviceClients(&atomic.Pointer[rules.Set]{}, coapside.EndpointOptions{}, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { d.Close() })
	var lookups []string
	d.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		lookups = append(lookups, host)
		return []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")}, nil
	}
	if _, err := d.prepare(t.Context(), dev, false, req); err != nil {
		t.Fatal(err)
	}
	if req.Peer.String() != "[::1]:5699" || !slices.Equal(lookups, []string{"Sensor.example"}) {
		t.Fatalf("peer %v after lookups %q, want [::1]:5699 after one", req.Peer, lookups)
	}
}
