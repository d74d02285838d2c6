//go:build linux

package coapside

import (
	"net"
	"net/netip"
	"testing"
	"time"
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

// TestRetiredReaderLeavesItsBatch: a surplus reader that retires keeps its
// batch buffers for the next reader instead of leaving them to the
// garbage collector, and the endpoint keeps at most maxSpareBatches.
func TestRetiredReaderLeavesItsBatch(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := NewEndpoint(conn, EndpointOptions{})
	defer e.Close()
	if e.bconn == nil {
		t.Skip("no batched reads on this socket")
	}
	e.poolMu.Lock()
	for range 3 {
		e.spawnReaderLocked() // idle readers above DefaultIdleReaders retire after a read
	}
	e.poolMu.Unlock()
	c, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	spare := func() int {
		e.poolMu.Lock()
		defer e.poolMu.Unlock()
		return len(e.spare)
	}
	deadline := time.Now().Add(10 * time.Second)
	for spare() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no reader retired")
		}
		if _, err := c.Write([]byte{0xff}); err != nil { // malformed: dropped
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	e.poolMu.Lock()
	kept := e.spare[len(e.spare)-1]
	e.poolMu.Unlock()
	if got := e.takeBatch(); got != kept {
		t.Fatal("a new reader did not get the retired reader's batch")
	}
	for range maxSpareBatches + 3 {
		e.putBatch(newReaderBatch(e, e.udp, e.p.MaxMessageSize))
	}
	if n := spare(); n != maxSpareBatches {
		t.Fatalf("%d spare batches kept, want at most %d", n, maxSpareBatches)
	}
}
