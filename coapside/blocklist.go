package coapside

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// MaxBlockedSources bounds the sources a socket's kernel filter drops at
// once; a flood from more sources than this is left to the rate limiter.
const MaxBlockedSources = 128

// Classic BPF as the kernel's socket filters take it (linux/filter.h):
// the opcodes this package uses and the base of loads relative to the
// network (IP) header, which a UDP socket's filter reaches below its own
// data (the UDP header).
const (
	bpfLdWAbs  = 0x20 // A = 32 bits at k
	bpfLdBAbs  = 0x30 // A = 8 bits at k
	bpfRshK    = 0x74 // A >>= k
	bpfJa      = 0x05 // pc += k
	bpfJeqK    = 0x15 // pc += (A == k) ? jt : jf
	bpfRetK    = 0x06 // return k bytes of the packet; 0 drops it
	bpfNetOff  = 0xfff00000
	bpfAccept  = 0xffffffff
	bpfMaxInsn = 4096
)

// bpfInsn is one classic BPF instruction.
type bpfInsn struct {
	Op     uint16
	Jt, Jf uint8
	K      uint32
}

// blockProgram returns a socket filter dropping every datagram whose IP
// source is one of addrs (IPv4, also as it reaches an IPv6 socket, and
// IPv6) and accepting all others.
func blockProgram(addrs []netip.Addr) []bpfInsn {
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	p := []bpfInsn{
		{Op: bpfLdBAbs, K: bpfNetOff},         // the IP version and header length
		{Op: bpfRshK, K: 4},                   // the version
		{Op: bpfJeqK, K: 4, Jt: 1},            // IPv4: on to its source
		{Op: bpfJa, K: uint32(len(v4)*2 + 2)}, // else past the IPv4 part
		{Op: bpfLdWAbs, K: bpfNetOff + 12},
	}
	for _, a := range v4 {
		b := a.As4()
		p = append(p, bpfInsn{Op: bpfJeqK, K: binary.BigEndian.Uint32(b[:]), Jf: 1}, bpfInsn{Op: bpfRetK})
	}
	p = append(p,
		bpfInsn{Op: bpfRetK, K: bpfAccept},
		bpfInsn{Op: bpfJeqK, K: 6, Jt: 1}, // A still holds the version
		bpfInsn{Op: bpfRetK, K: bpfAccept},
	)
	for _, a := range v6 {
		b := a.As16()
		for i := range 4 {
			p = append(p,
				bpfInsn{Op: bpfLdWAbs, K: bpfNetOff + 8 + uint32(4*i)},
				bpfInsn{Op: bpfJeqK, K: binary.BigEndian.Uint32(b[4*i:]), Jf: uint8(7 - 2*i)})
		}
		p = append(p, bpfInsn{Op: bpfRetK})
	}
	return append(p, bpfInsn{Op: bpfRetK, K: bpfAccept})
}

// sourceBlock is a socket's list of sources dropped by the kernel before
// they are read: a source that keeps flooding after the rate limiter has
// refused it costs the bridge nothing more for RateBlock. Without kernel
// support (attach fails) it stays empty and the rate limiter alone sheds.
type sourceBlock struct {
	conn  *net.UDPConn
	sched *scheduler
	dur   time.Duration

	mu     sync.Mutex
	until  map[netip.Addr]time.Time
	expiry *timerItem
	off    bool // the kernel refused a filter: blocking is off on this socket
}

func newSourceBlock(c *net.UDPConn, s *scheduler, d time.Duration) *sourceBlock {
	if c == nil || d <= 0 || !socketFilters {
		return nil
	}
	return &sourceBlock{conn: c, sched: s, dur: d, until: make(map[netip.Addr]time.Time)}
}

// add blocks a for the block's duration from now. It reports whether a is
// newly blocked; false when it already was, the list is full or the kernel
// refused the filter (err is that refusal, once).
func (b *sourceBlock) add(a netip.Addr, now time.Time) (added bool, err error) {
	a = a.Unmap()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.off || len(b.until) >= MaxBlockedSources {
		return false, nil
	}
	if _, ok := b.until[a]; ok {
		return false, nil
	}
	b.until[a] = now.Add(b.dur)
	if err := b.applyLocked(); err != nil {
		delete(b.until, a)
		b.off = true
		return false, err
	}
	if b.expiry == nil {
		b.expiry = b.sched.schedule(now.Add(b.dur), b.expire)
	}
	return true, nil
}

// expire lifts the blocks that have run out and reschedules itself for
// the next one.
func (b *sourceBlock) expire(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var next time.Time
	for a, t := range b.until {
		if !t.After(now) {
			delete(b.until, a)
		} else if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if err := b.applyLocked(); err != nil {
		b.off = true
	}
	if next.IsZero() {
		b.expiry = nil
		return
	}
	b.sched.reschedule(b.expiry, next)
}

// blocked returns the sources blocked now, sorted.
func (b *sourceBlock) blocked() []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]netip.Addr, 0, len(b.until))
	for a := range b.until {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// applyLocked puts the current list into the socket's filter, or takes
// the filter off when the list is empty.
func (b *sourceBlock) applyLocked() error {
	if len(b.until) == 0 {
		return detachFilter(b.conn)
	}
	addrs := make([]netip.Addr, 0, len(b.until))
	for a := range b.until {
		addrs = append(addrs, a)
	}
	return attachFilter(b.conn, blockProgram(addrs))
}
