//go:build linux

package coapside

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsgReader reads a batch of datagrams with one recvmmsg call into buffers
// it owns, and decodes each source address into a netip.AddrPort, so a
// datagram costs no allocation however many arrive (x/net's ReadBatch
// allocates a *net.UDPAddr for each).
type mmsgReader struct {
	rc    syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
	bufs  [][]byte

	// The outcome of the last call, set by recv: a method value made once,
	// so that RawConn.Read allocates no closure per call.
	recvFn func(fd uintptr) bool
	want   int // datagrams the caller has room for
	n      int
	errno  syscall.Errno
}

func newDatagramReader(c *net.UDPConn, bufs [][]byte) datagramReader {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	r := &mmsgReader{
		rc:    rc,
		hdrs:  make([]unix.Mmsghdr, len(bufs)),
		iovs:  make([]unix.Iovec, len(bufs)),
		names: make([]unix.RawSockaddrInet6, len(bufs)),
		bufs:  bufs,
	}
	for i := range r.hdrs {
		r.iovs[i].Base = &bufs[i][0]
		r.iovs[i].SetLen(len(bufs[i]))
		h := &r.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
	}
	r.recvFn = r.recv
	return r
}

// recv is the RawConn.Read callback: false asks the poller to wait for
// the socket to become readable.
func (r *mmsgReader) recv(fd uintptr) bool {
	for i := range r.want {
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].Len = 0
	}
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.want), 0, 0, 0)
	for errno == unix.EINTR {
		n, _, errno = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.want), 0, 0, 0)
	}
	if errno == unix.EAGAIN {
		return false
	}
	r.n, r.errno = int(n), errno
	return true
}

func (r *mmsgReader) read(lens []int, from []netip.AddrPort) (int, error) {
	r.want = min(len(r.hdrs), len(lens), len(from))
	if r.want == 0 {
		return 0, nil
	}
	if err := r.rc.Read(r.recvFn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	n := 0
	for i := range r.n {
		ap, ok := rawAddrPort(&r.names[i], r.hdrs[i].Hdr.Namelen)
		if !ok {
			continue // not an IP source: nothing to answer or account
		}
		r.bufs[n], r.bufs[i] = r.bufs[i], r.bufs[n]
		r.iovs[n].Base, r.iovs[i].Base = r.iovs[i].Base, r.iovs[n].Base
		lens[n], from[n] = int(r.hdrs[i].Len), ap
		n++
	}
	return n, nil
}

// rawAddrPort decodes a sockaddr_in or sockaddr_in6 of length l.
func rawAddrPort(sa *unix.RawSockaddrInet6, l uint32) (netip.AddrPort, bool) {
	switch sa.Family {
	case unix.AF_INET:
		if l < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, false
		}
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), netPort(s4.Port)), true
	case unix.AF_INET6:
		if l < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, false
		}
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			a = a.WithZone(zoneName(sa.Scope_id))
		}
		return netip.AddrPortFrom(a, netPort(sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// netPort converts a port in network byte order as the kernel stores it.
func netPort(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return binary.BigEndian.Uint16(b[:])
}

// zoneName names an IPv6 scope (a link-local source) as net does: the
// interface name, or the index in decimal.
func zoneName(index uint32) string {
	if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(index), 10)
}
