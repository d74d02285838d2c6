package coapside

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/block"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// FuzzBlockwiseServer feeds arbitrary Block1, Block2, Size1 and Size2
// option bytes and payloads from one peer through the server's block-wise
// layer. It must answer every request with a valid code, never panic, and
// never send a block larger than the block size.
func FuzzBlockwiseServer(f *testing.F) {
	f.Add([]byte{0x0a}, []byte{}, uint16(300), []byte("hello"), uint8(0))       // Block1 0/M/64
	f.Add([]byte{}, []byte{0x16}, uint16(3000), []byte{}, uint8(1))             // Block2 1/-/1024
	f.Add([]byte{0x07}, []byte{0x07}, uint16(10), []byte("x"), uint8(2))        // reserved SZX
	f.Add([]byte{0xff, 0xff, 0xff}, []byte{}, uint16(0), []byte("x"), uint8(3)) // max NUM
	f.Add([]byte{}, []byte{0xff, 0xff, 0xf6}, uint16(5000), []byte{}, uint8(0)) // block far beyond the end
	f.Add([]byte{1, 2, 3, 4}, []byte{}, uint16(1), []byte{}, uint8(0))          // over-long option
	f.Fuzz(func(t *testing.T, b1, b2 []byte, bodyLen uint16, payload []byte, flags uint8) {
		body := bigBody(int(bodyLen))
		var handled int
		h := HandlerFunc(func(w ResponseWriter, r *Request) {
			handled++
			_, _ = w.Write(body)
		})
		bw, err := NewBlockwise(h, BlockwiseOptions{MaxBodySize: 4096}, 0)
		if err != nil {
			t.Fatal(err)
		}
		peer := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
		for round := range 3 { // the same blocks again continue or restart a transfer
			req := &Request{Method: message.PUT, Type: message.Confirmable, Peer: peer, Payload: payload}
			if flags&1 == 0 || len(b1) > 0 {
				req.Options = req.Options.Set(message.Block1, b1)
			}
			if len(b2) > 0 || flags&2 != 0 {
				req.Options = req.Options.Set(message.Block2, b2)
			}
			if flags&4 != 0 {
				req.Options = req.Options.SetUint(message.Size1, uint32(bodyLen))
			}
			req.Options = req.Options.SetPath("/fuzz")
			w := &responseWriter{}
			bw.ServeCOAP(w, req)
			if w.code != 0 && !w.code.IsResponse() {
				t.Fatalf("round %d: response code %v", round, w.code)
			}
			if v, ok := w.opts.Get(message.Block2); ok {
				o, err := block.ParseBytes(v)
				if err != nil {
					t.Fatalf("round %d: invalid Block2 in response: %v", round, err)
				}
				if len(w.payload) > o.Size() || len(w.payload) > bw.BlockSize() {
					t.Fatalf("round %d: %d-byte payload in block %v", round, len(w.payload), o)
				}
			}
		}
		if st := bw.Stats(); st.Buffered > 4096*st.Active {
			t.Fatalf("assembler holds %d bytes for %d transfers", st.Buffered, st.Active)
		}
	})
}

// FuzzObservationNotifications drives one client observation with a random
// sequence of notifications (sequence numbers, duplicates, reorderings,
// CON/NON, with or without Observe). The same sequence number is never
// delivered twice in a row, nothing is delivered after a response without
// Observe ended the observation, and nothing panics.
func FuzzObservationNotifications(f *testing.F) {
	f.Add([]byte{0, 0, 10, 0, 0, 0, 11, 0, 0, 0, 10, 0, 0, 0, 11, 0})                     // duplicate, reorder
	f.Add([]byte{0x80, 0, 0, 0, 0x7f, 0xff, 0xff, 0, 0, 0, 0, 1})                         // wrap-around
	f.Add([]byte{0, 0, 0, 5, 0x40, 0, 0, 6, 0, 0, 0, 7})                                  // no Observe ends it
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0x10, 0, 0, 2, 0x10, 0x01, 0x00, 3}) // CON and error code
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &Client{timeout: time.Second}
		var delivered []Notification
		o := &Observation{
			c: c, req: &Request{Method: message.GET}, peer: &net.UDPAddr{}, token: []byte{1},
			done: make(chan struct{}), first: make(chan *message.Message, 1), opts: ObservationOptions{ReregisterMargin: time.Hour},
			fn: func(n Notification) { delivered = append(delivered, n) },
		}
		o.timer = time.AfterFunc(time.Hour, func() {})
		defer o.timer.Stop()
		for i := 0; i+4 <= len(data); i += 4 {
			flags := data[i]
			seq := binary.BigEndian.Uint32(data[i:i+4]) & 0xffffff
			m := &message.Message{Type: message.NonConfirmable, Code: message.Content, Token: []byte{1}}
			if flags&0x10 != 0 {
				m.Type = message.Confirmable
			}
			if flags&0x20 != 0 {
				m.Code = message.NotFound
			}
			if flags&0x40 == 0 {
				m.Options = m.Options.SetUint(message.Observe, seq)
			}
			o.onResponse(m, nil, nil)
			if i == 0 {
				<-o.first // the registration response, delivered by Observe itself
				o.mu.Lock()
				o.ready = true
				o.mu.Unlock()
			}
			// Let the delivery goroutine finish before the next message, so
			// the order is deterministic.
			for {
				o.mu.Lock()
				idle := !o.running
				o.mu.Unlock()
				if idle {
					break
				}
				time.Sleep(10 * time.Microsecond)
			}
		}
		o.end(ErrCanceled)
		o.Wait()
		ended := false
		for i, n := range delivered {
			if ended {
				t.Fatalf("notification %d delivered after the observation ended", i)
			}
			if !n.HasSeq || n.Code.IsError() {
				ended = true
			}
			if i > 0 && n.HasSeq && delivered[i-1].HasSeq && n.Seq == delivered[i-1].Seq {
				t.Fatalf("sequence number %d delivered twice in a row", n.Seq)
			}
		}
	})
}
