package coapside

import (
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketFilters reports whether this system can drop sources in the kernel.
const socketFilters = true

// attachFilter sets prog as c's socket filter, replacing any before it.
func attachFilter(c *net.UDPConn, prog []bpfInsn) error {
	if len(prog) > bpfMaxInsn {
		return fmt.Errorf("coap: socket filter of %d instructions", len(prog))
	}
	ins := make([]unix.SockFilter, len(prog))
	for i, p := range prog {
		ins[i] = unix.SockFilter{Code: p.Op, Jt: p.Jt, Jf: p.Jf, K: p.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(ins)), Filter: unsafe.SliceData(ins)}
	return control(c, func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog)
	})
}

// detachFilter takes c's socket filter off; none there is no error.
func detachFilter(c *net.UDPConn) error {
	return control(c, func(fd int) error {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
		if err == unix.ENOENT {
			return nil
		}
		return err
	})
}

// socketDrops returns how many datagrams the kernel dropped on c's way in:
// a full receive buffer or the socket filter (SO_MEMINFO).
func socketDrops(c *net.UDPConn) (uint64, bool) {
	var n uint64
	err := control(c, func(fd int) error {
		var mem [unix.SK_MEMINFO_VARS]uint32
		l := uint32(unsafe.Sizeof(mem))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&l)), 0)
		if errno != 0 {
			return errno
		}
		n = uint64(mem[unix.SK_MEMINFO_DROPS])
		return nil
	})
	return n, err == nil
}

// control runs fn on c's file descriptor.
func control(c *net.UDPConn, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("coap: socket: %w", err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return fmt.Errorf("coap: socket: %w", err)
	}
	if ferr != nil {
		return fmt.Errorf("coap: socket filter: %w", ferr)
	}
	return nil
}
