//go:build linux

package coapside

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Linux reports an ICMP error for a datagram sent on an unconnected UDP
// socket only when IP_RECVERR / IPV6_RECVERR is set: the error is then
// queued on the socket's error queue, with the datagram's destination, and
// the next read or write call on the socket fails with its errno once.
// Without it a client whose socket has closed answers a confirmable
// message with ICMP port unreachable that nobody sees, and the message is
// retransmitted for MAX_TRANSMIT_WAIT (93 s) instead.

// enableRecvErr turns on the error queue of c and reports whether it is on.
func enableRecvErr(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	on := false
	_ = rc.Control(func(fd uintptr) {
		s := int(fd)
		domain, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			return
		}
		// IPv4 destinations: on an IPv4 socket, and IPv4-mapped ones on a
		// dual-stack IPv6 socket.
		v4 := unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_RECVERR, 1) == nil
		switch domain {
		case unix.AF_INET:
			on = v4
		case unix.AF_INET6:
			on = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1) == nil
		}
	})
	return on
}

// queuedErrno reports whether err, returned by a read or write call on a
// socket with an error queue, is one an ICMP error puts there (see
// icmp_err_convert and icmpv6_err_convert in Linux): the call did not fail
// for its own datagram, and the error queue has the details.
func queuedErrno(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN,
		unix.EPROTO, unix.EMSGSIZE, unix.EACCES, unix.ENOPROTOOPT, unix.EOPNOTSUPP:
		return true
	}
	return false
}

// maxDrain bounds the error-queue entries read in one drain; the socket's
// error stays set while more are queued, so the next read drains on.
const maxDrain = 256

// drainErrQueue reads c's error queue without blocking and calls refused
// with the destination of every datagram answered with ICMP or ICMPv6 port
// unreachable. Other entries (host or network unreachable, which may pass
// when a route comes back, and messages too big) are read and dropped:
// their messages are retransmitted as usual. It returns the entries read.
func drainErrQueue(c *net.UDPConn, refused func(dst netip.AddrPort)) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	var buf [64]byte
	var oob [256]byte
	_ = rc.Control(func(fd uintptr) {
		for n < maxDrain {
			_, oobn, _, from, err := unix.Recvmsg(int(fd), buf[:], oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if err != nil {
				return // EAGAIN: the queue is empty
			}
			n++
			dst, ok := sockaddrAddrPort(from)
			if ok && portUnreachable(oob[:oobn]) {
				refused(dst)
			}
		}
	})
	return n
}

// portUnreachable reports whether the control messages of an error-queue
// entry carry an ICMP (type 3 code 3) or ICMPv6 (type 1 code 4) port
// unreachable, which Linux reports as ECONNREFUSED.
func portUnreachable(oob []byte) bool {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	for _, m := range msgs {
		v4 := m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR
		v6 := m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_RECVERR
		if (!v4 && !v6) || len(m.Data) < 8 {
			continue
		}
		// struct sock_extended_err: ee_errno (u32), ee_origin, ee_type,
		// ee_code, ee_pad (u8 each), ...
		errno := binary.NativeEndian.Uint32(m.Data[0:4])
		origin := m.Data[4]
		if errno == uint32(unix.ECONNREFUSED) &&
			(origin == unix.SO_EE_ORIGIN_ICMP || origin == unix.SO_EE_ORIGIN_ICMP6) {
			return true
		}
	}
	return false
}

// sockaddrAddrPort converts the destination an error-queue entry names.
func sockaddrAddrPort(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), true
	case *unix.SockaddrInet6:
		ip := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 && !ip.Is4In6() {
			zone := strconv.FormatUint(uint64(a.ZoneId), 10)
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			}
			ip = ip.WithZone(zone)
		}
		return netip.AddrPortFrom(ip, uint16(a.Port)), true
	}
	return netip.AddrPort{}, false
}
