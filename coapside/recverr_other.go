//go:build !linux

package coapside

import (
	"net"
	"net/netip"
)

// enableRecvErr is Linux's only: elsewhere ICMP errors for an unconnected
// UDP socket are not reported, and a confirmable message to a closed port
// is retransmitted until it times out.
func enableRecvErr(*net.UDPConn) bool { return false }

func queuedErrno(error) bool { return false }

func drainErrQueue(*net.UDPConn, func(netip.AddrPort)) int { return 0 }
