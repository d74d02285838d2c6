package peer

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// Flood is one overload run against a CoAP server: a single UDP socket
// sends requests of one type for Length, either as fast as the socket takes
// them or paced at about 25,000 per second.
type Flood struct {
	Type    message.Type  // message.Confirmable or message.NonConfirmable
	Method  message.Code  // default POST
	Path    []string      // Uri-Path segments
	Payload int           // payload bytes (default 64)
	Paced   bool          // pace instead of sending flat out
	Length  time.Duration // how long to send
	From    net.IP        // source address (default the destination's, e.g. 127.0.0.1)
}

// String names the run for test output, e.g. "NON-unpaced".
func (f Flood) String() string {
	pace := "unpaced"
	if f.Paced {
		pace = "paced"
	}
	return fmt.Sprintf("%s-%s", f.Type, pace)
}

// Run sends the flood to addr and returns how many requests it sent.
// Replies are read and discarded so the flooder's own socket never fills;
// the server's socket is what is under test.
func (f Flood) Run(tb testing.TB, addr *net.UDPAddr) int {
	tb.Helper()
	from := f.From
	if from == nil {
		from = addr.IP
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: from})
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFromUDP(buf); err != nil {
				return
			}
		}
	}()
	method := f.Method
	if method == 0 {
		method = message.POST
	}
	size := f.Payload
	if size == 0 {
		size = 64
	}
	m := message.Message{Type: f.Type, Code: method, Token: []byte{1, 2, 3, 4}, Payload: make([]byte, size)}
	for _, s := range f.Path {
		m.Options = m.Options.Add(message.URIPath, []byte(s))
	}
	var buf []byte
	sent := 0
	end := time.Now().Add(f.Length)
	for time.Now().Before(end) {
		m.MessageID = uint16(sent)
		buf, err = m.AppendBinary(buf[:0])
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := c.WriteToUDP(buf, addr); err != nil {
			tb.Fatal(err)
		}
		sent++
		if f.Paced && sent%50 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	c.Close()
	<-drained
	return sent
}
