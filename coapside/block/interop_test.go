package block

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// rawClient does lock-step CON exchanges over UDP with the message codec,
// enough to drive Sender and Receiver against a real server.
type rawClient struct {
	t    *testing.T
	conn *net.UDPConn
	mid  uint16
}

func (c *rawClient) exchange(req *message.Message) *message.Message {
	c.t.Helper()
	c.mid++
	req.Type = message.Confirmable
	req.MessageID = c.mid
	req.Token = []byte{0xb1, 0x0c}
	out, err := req.MarshalBinary()
	if err != nil {
		c.t.Fatal(err)
	}
	buf := make([]byte, 2048)
	// Retransmit on a short timer; the first exchange also waits for the
	// server to bind.
	for range 25 {
		if _, err := c.conn.Write(out); err != nil {
			c.t.Fatal(err)
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, err := c.conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				// ICMP port unreachable before the server is up.
				time.Sleep(100 * time.Millisecond)
				break
			}
			resp, err := message.Decode(append([]byte(nil), buf[:n]...))
			if err != nil {
				c.t.Fatalf("decode response: %v", err)
			}
			if resp.Type == message.Acknowledgement && resp.MessageID == c.mid && !resp.IsEmpty() {
				return resp
			}
		}
	}
	c.t.Fatalf("no response to %v", req)
	return nil
}

func optionBlock(t *testing.T, m *message.Message, id message.OptionID) (Option, bool) {
	t.Helper()
	v, ok := m.Options.Get(id)
	if !ok {
		return Option{}, false
	}
	o, err := ParseBytes(v)
	if err != nil {
		t.Fatalf("%v in response: %v", id, err)
	}
	return o, true
}

// TestLibcoapBlockwise uploads a body with Sender (Block1, 64-byte blocks)
// to libcoap coap-server's /example_data and reads it back with Receiver
// (Block2, 128-byte blocks).
func TestLibcoapBlockwise(t *testing.T) {
	conn, err := net.DialUDP("udp", nil, peer.StartCoapServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &rawClient{t: t, conn: conn}

	want := make([]byte, 3000)
	for i := range want {
		want[i] = 'a' + byte(i*31%26)
	}

	s, err := NewSender(want, 64)
	if err != nil {
		t.Fatal(err)
	}
	for blocks := 0; ; blocks++ {
		if blocks > 100 {
			t.Fatal("upload does not end")
		}
		o, payload := s.Current()
		v, err := o.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		req := &message.Message{Code: message.PUT, Payload: payload}
		req.Options = req.Options.SetPath("/example_data").SetContentFormat(0).Set(message.Block1, v)
		if o.Num == 0 {
			req.Options = req.Options.SetUint(message.Size1, s.Size1())
		}
		resp := c.exchange(req)
		if !o.More {
			if !resp.Code.IsSuccess() {
				t.Fatalf("final PUT answered %v", resp.Code)
			}
			if got, want := blocks+1, (len(want)+63)/64; got != want {
				t.Fatalf("uploaded in %d blocks, want %d", got, want)
			}
			break
		}
		if resp.Code != message.Continue {
			t.Fatalf("block %s answered %v, want 2.31", o, resp.Code)
		}
		b1, ok := optionBlock(t, resp, message.Block1)
		if !ok {
			t.Fatal("2.31 without Block1")
		}
		if err := s.Continue(b1); err != nil {
			t.Fatal(err)
		}
	}

	r, err := NewReceiver(ReceiverOptions{BlockSize: 128})
	if err != nil {
		t.Fatal(err)
	}
	next := r.First()
	for blocks := 0; ; blocks++ {
		if blocks > 100 {
			t.Fatal("download does not end")
		}
		v, _ := next.Bytes()
		req := &message.Message{Code: message.GET}
		req.Options = req.Options.SetPath("/example_data").Set(message.Block2, v)
		resp := c.exchange(req)
		if resp.Code != message.Content {
			t.Fatalf("GET block %s: %v", next, resp.Code)
		}
		b2, has := optionBlock(t, resp, message.Block2)
		if has && b2.SZX > 3 {
			t.Fatalf("server ignored the requested block size: %s", b2)
		}
		etag, _ := resp.Options.ETag()
		size2, _ := resp.Options.Uint(message.Size2)
		st, err := r.Add(Response{Block: b2, HasBlock: has, ETag: etag, Size2: size2, Payload: resp.Payload})
		if err != nil {
			t.Fatal(err)
		}
		if st.Done {
			if !bytes.Equal(st.Body, want) {
				t.Fatalf("read back %d bytes, differs from the %d uploaded", len(st.Body), len(want))
			}
			if got, want := blocks+1, (len(want)+127)/128; got != want {
				t.Fatalf("downloaded in %d blocks, want %d", got, want)
			}
			return
		}
		next = st.Next
	}
}
