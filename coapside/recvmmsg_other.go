//go:build !linux

package coapside

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// batchReader reads a batch with x/net's ReadBatch, where recvmmsg is not
// called directly.
type batchReader struct {
	bc   batchConn
	rms  []ipv4.Message
	bufs [][]byte
}

func newDatagramReader(c *net.UDPConn, bufs [][]byte) datagramReader {
	bc := newBatchConn(c)
	if bc == nil {
		return nil
	}
	r := &batchReader{bc: bc, rms: make([]ipv4.Message, len(bufs)), bufs: bufs}
	for i := range r.rms {
		r.rms[i].Buffers = [][]byte{bufs[i]}
	}
	return r
}

func (r *batchReader) read(lens []int, from []netip.AddrPort) (int, error) {
	n, err := r.bc.ReadBatch(r.rms[:min(len(r.rms), len(lens), len(from))], 0)
	if err != nil {
		return 0, err
	}
	k := 0
	for i := range n {
		ms := &r.rms[i]
		ua, ok := ms.Addr.(*net.UDPAddr)
		ms.Addr = nil
		if !ok {
			continue
		}
		r.rms[k].Buffers, ms.Buffers = ms.Buffers, r.rms[k].Buffers
		r.bufs[k], r.bufs[i] = r.bufs[i], r.bufs[k]
		lens[k], from[k] = ms.N, ua.AddrPort()
		k++
	}
	return k, nil
}
