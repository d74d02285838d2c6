//go:build linux

package coapside

import (
	"net"
	"net/netip"
	"testing"
)

// TestBatchReaderDecodesSourcesWithoutAllocating: a batch read returns
// each datagram with its length and its source, IPv4 and IPv6, and
// allocates nothing however many datagrams it reads.
func TestBatchReaderDecodesSourcesWithoutAllocating(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "::1"} {
		t.Run(ip, func(t *testing.T) {
			in, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
			if err != nil {
				t.Skipf("no %s: %v", ip, err)
			}
			defer in.Close()
			var srcs []*net.UDPConn
			for range 3 {
				c, err := net.DialUDP("udp", nil, in.LocalAddr().(*net.UDPAddr))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				srcs = append(srcs, c)
			}
			bufs := make([][]byte, batchSize)
			for i := range bufs {
				bufs[i] = make([]byte, 64)
			}
			rd := newDatagramReader(in, bufs)
			lens, from := make([]int, batchSize), make([]netip.AddrPort, batchSize)
			send := func() {
				for i, c := range srcs {
					if _, err := c.Write(make([]byte, i+1)); err != nil {
						t.Fatal(err)
					}
				}
			}
			read := func() int {
				got := 0
				for got < len(srcs) {
					n, err := rd.read(lens[got:], from[got:])
					if err != nil {
						t.Fatal(err)
					}
					got += n
				}
				return got
			}
			send()
			if n := read(); n != len(srcs) {
				t.Fatalf("read %d datagrams, want %d", n, len(srcs))
			}
			for i, c := range srcs {
				want := c.LocalAddr().(*net.UDPAddr).AddrPort()
				if from[i] != want || lens[i] != i+1 {
					t.Errorf("datagram %d: %d bytes from %v, want %d from %v", i, lens[i], from[i], i+1, want)
				}
			}
			if raceEnabled {
				return // counted in the run without -race
			}
			allocs := testing.AllocsPerRun(20, func() {
				send()
				read()
			})
			// The sends allocate nothing either (connected sockets).
			if allocs != 0 {
				t.Errorf("%v allocations per batch of %d", allocs, len(srcs))
			}
		})
	}
}
