package coapside

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/observe"
)

// TestMeasureClosedObserversReclaimed measures how long the observers of
// COAP_MEASURE_OBSERVERS (10,000) client sockets take to be removed once
// every socket has closed, with RFC 7252 transmission parameters and a
// check interval of COAP_MEASURE_CHECK (60s, the bridge's observe_check):
// idle (the check CON finds them) and with one publish a second. It only
// runs with COAP_MEASURE_RECLAIM=1:
//
//	COAP_MEASURE_RECLAIM=1 go test ./coapside -run TestMeasureClosedObserversReclaimed -v -timeout 1h
func TestMeasureClosedObserversReclaimed(t *testing.T) {
	if os.Getenv("COAP_MEASURE_RECLAIM") == "" {
		t.Skip("a measurement: set COAP_MEASURE_RECLAIM=1 to run it")
	}
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("COAP_MEASURE_OBSERVERS")); err == nil && v > 0 {
		n = v
	}
	check := 60 * time.Second
	if v, err := time.ParseDuration(os.Getenv("COAP_MEASURE_CHECK")); err == nil && v > 0 {
		check = v
	}
	for _, ip := range loopbacks(t) {
		for _, mode := range []string{"idle", "publish"} {
			t.Run(ip+"/"+mode, func(t *testing.T) { measureReclaim(t, ip, mode, n, check) })
		}
	}
}

func measureReclaim(t *testing.T, ip, mode string, n int, check time.Duration) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(4 << 20) // as the bridge's listener
	res := &counterResource{value: []byte("v")}
	obs, addr := startObserveServerWith(t, conn, ObserveOptions{
		CheckInterval: check, MaxObservers: 2 * n, MaxObserversPerSource: 2 * n,
	}, EndpointOptions{}, res)
	socks := make([]*net.UDPConn, n)
	defer func() {
		for _, c := range socks {
			if c != nil {
				c.Close()
			}
		}
	}()
	began := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	const workers = 32
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				c, err := registerSocket(ip, addr, uint16(i))
				if err != nil {
					errs <- err
					return
				}
				socks[i] = c
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := obs.Observers("/obs"); got != n {
		t.Fatalf("observers %d, want %d", got, n)
	}
	registering := time.Since(began)
	ep := endpointOf(t, obs, addr)
	for i, c := range socks {
		c.Close()
		socks[i] = nil
	}
	closed := time.Now()
	stop := make(chan struct{})
	var pub sync.WaitGroup
	if mode == "publish" {
		pub.Go(func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					obs.Notify("/obs")
				}
			}
		})
	}
	var first time.Duration
	deadline := closed.Add(check + 5*time.Minute)
	for obs.Observers("/obs") > 0 && time.Now().Before(deadline) {
		if first == 0 && obs.Observers("/obs") < n {
			first = time.Since(closed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	all := time.Since(closed)
	close(stop)
	pub.Wait()
	s := obs.Stats()
	st := ep.Stats().Snapshot()
	left := obs.Observers("/obs")
	t.Logf("%s %s: %d observers; registering took %v; after the sockets closed: first removed %v, all removed %v (%d left); removed as unreachable %d, timed out %d, checks %d, send errors %d; ICMP port unreachable heard %d, retransmissions %d, read errors %d; all %+v",
		ip, mode, n, registering, first, all, left, s.Unreachable, s.Timeouts, s.Checks, s.SendErrors, st.Unreachable, st.Retransmissions, st.ReadErrors, s)
	if left > 0 {
		t.Errorf("%d observers left after %v", left, all)
	}
}

// registerSocket opens a client socket on ip and registers it as an
// observer of /obs at addr, answering the server's Echo challenge.
func registerSocket(ip string, addr *net.UDPAddr, mid uint16) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		return nil, err
	}
	m := &message.Message{Type: message.Confirmable, Code: message.GET, MessageID: mid, Token: []byte{byte(mid >> 8), byte(mid)}}
	m.Options = m.Options.SetPath("/obs").SetUint(message.Observe, observe.Register)
	buf := make([]byte, 1500)
	for range 2 {
		b, _ := m.MarshalBinary()
		if _, err := c.WriteToUDP(b, addr); err != nil {
			c.Close()
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, _, err := c.ReadFromUDP(buf)
		if err != nil {
			c.Close()
			return nil, err
		}
		resp, err := message.Decode(buf[:k])
		if err != nil {
			c.Close()
			return nil, err
		}
		if _, ok := resp.Options.Observe(); ok {
			return c, nil
		}
		echo, ok := echoChallenge(resp.Code, resp.Options)
		if !ok {
			c.Close()
			return nil, fmt.Errorf("registration answered %v", resp)
		}
		m.MessageID ^= 0x8000
		m.Options = m.Options.SetEcho(echo)
	}
	c.Close()
	return nil, fmt.Errorf("registration not accepted after the Echo")
}
