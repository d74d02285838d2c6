package dtls

import (
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// peerKey identifies a peer address in the session table. UDP addresses are
// keyed by their unmapped AddrPort so that 127.0.0.1 and ::ffff:127.0.0.1
// meet; other address types by network and string.
type peerKey struct {
	ap    netip.AddrPort
	other string
}

// sourceKey is the host part of a peerKey: the unit the per-source
// handshake limit counts by.
type sourceKey struct {
	ip    netip.Addr
	other string
}

func (k peerKey) source() sourceKey {
	if k.other != "" {
		return sourceKey{other: k.other}
	}
	return sourceKey{ip: k.ap.Addr()}
}

func keyOf(a net.Addr) peerKey {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return peerKey{ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
	}
	return peerKey{other: a.Network() + "|" + a.String()}
}

// peerConn is the net.Conn a pion session runs over: datagrams from one peer
// arrive through a bounded queue filled by the endpoint's read loop, and writes
// go straight to the shared socket addressed to the peer.
type peerConn struct {
	pc     net.PacketConn
	remote net.Addr
	in     chan []byte
	done   chan struct{}
	once   sync.Once
	rd     *deadline
	// wclosed stops writes. It is set by the session once pion is done, not
	// by Close: pion's read loop closes the conn while Close is still
	// sending close_notify, and that alert must still reach the peer.
	wclosed atomic.Bool
	// established makes SetReadDeadline a no-op once the handshake is done.
	// pion cancels its read loop with a past read deadline when the conn is
	// closed, and the loop then closes the conn under Close while Close is
	// sending close_notify, so the alert is lost (pion v2.2.12). Ignoring
	// the deadline leaves the loop blocked until Close closes this conn,
	// after the alert went out.
	established atomic.Bool
	// watch, when set before the handshake starts, sees every datagram
	// written before the session is established.
	watch func([]byte)
}

func newPeerConn(pc net.PacketConn, remote net.Addr, queue int) *peerConn {
	return &peerConn{
		pc:     pc,
		remote: remote,
		in:     make(chan []byte, queue),
		done:   make(chan struct{}),
		rd:     newDeadline(),
	}
}

// deliver queues a datagram without blocking; false means the queue is full
// or the conn is closed, and the datagram is dropped.
func (c *peerConn) deliver(b []byte) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.in <- b:
		return true
	default:
		return false
	}
}

// Read implements net.Conn. A datagram longer than p is truncated, as on a
// UDP socket.
func (c *peerConn) Read(p []byte) (int, error) {
	select {
	case <-c.done:
		return 0, io.EOF
	case <-c.rd.Done():
		return 0, os.ErrDeadlineExceeded
	default:
	}
	select {
	case b := <-c.in:
		return copy(p, b), nil
	case <-c.done:
		return 0, io.EOF
	case <-c.rd.Done():
		return 0, os.ErrDeadlineExceeded
	}
}

// Write implements net.Conn: one call, one datagram to the peer.
func (c *peerConn) Write(p []byte) (int, error) {
	if c.wclosed.Load() {
		return 0, net.ErrClosed
	}
	if c.watch != nil && !c.established.Load() {
		c.watch(p)
	}
	return c.pc.WriteTo(p, c.remote)
}

// Close implements net.Conn: reads end; writes continue until closeWrite.
// It does not close the shared socket.
func (c *peerConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

// markEstablished clears any read deadline and ignores later ones (see
// established).
func (c *peerConn) markEstablished() {
	c.rd.Set(time.Time{})
	c.established.Store(true)
}

// closeAll ends reads and writes.
func (c *peerConn) closeAll() {
	_ = c.Close()
	c.wclosed.Store(true)
}

// LocalAddr implements net.Conn.
func (c *peerConn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// RemoteAddr implements net.Conn.
func (c *peerConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline implements net.Conn; only the read side has a deadline.
func (c *peerConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *peerConn) SetReadDeadline(t time.Time) error {
	if c.established.Load() {
		return nil
	}
	c.rd.Set(t)
	return nil
}

// SetWriteDeadline implements net.Conn. Writes go to a UDP socket and do not
// block, so there is nothing to bound.
func (c *peerConn) SetWriteDeadline(time.Time) error { return nil }
