//go:build !linux

package coapside

import (
	"errors"
	"net"
)

// socketFilters reports whether this system can drop sources in the kernel.
const socketFilters = false

var errNoSocketFilter = errors.New("coap: no socket filters on this system")

func attachFilter(*net.UDPConn, []bpfInsn) error { return errNoSocketFilter }

func detachFilter(*net.UDPConn) error { return nil }

func socketDrops(*net.UDPConn) (uint64, bool) { return 0, false }
