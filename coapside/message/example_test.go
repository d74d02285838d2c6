package message_test

import (
	"fmt"
	"log"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// Encoding a confirmable POST to /sensors/temp with a text payload: the
// 4-byte header, the token, the options in delta encoding and the payload
// after the 0xff marker (RFC 7252 §3).
func ExampleMessage_MarshalBinary() {
	m := &message.Message{
		Type:      message.Confirmable,
		Code:      message.POST,
		MessageID: 0x1234,
		Token:     []byte{0xab, 0x01},
		Payload:   []byte("21.5"),
	}
	m.Options = m.Options.SetPath("/sensors/temp").SetContentFormat(message.TextPlain)
	wire, err := m.MarshalBinary()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("% x\n", wire[:4])   // Ver=1 T=CON TKL=2 | 0.02 POST | Message ID
	fmt.Printf("% x\n", wire[4:6])  // Token
	fmt.Printf("% x\n", wire[6:20]) // Uri-Path "sensors", "temp"; Content-Format 0
	fmt.Printf("% x\n", wire[20:])  // 0xff, then the payload
	// Output:
	// 42 02 12 34
	// ab 01
	// b7 73 65 6e 73 6f 72 73 04 74 65 6d 70 10
	// ff 32 31 2e 35
}

// Decoding a datagram: a piggybacked 2.05 Content response with
// Content-Format application/json.
func ExampleDecode() {
	wire := []byte{
		0x61, 0x45, 0x12, 0x34, // Ver=1 T=ACK TKL=1 | 2.05 Content | Message ID 0x1234
		0xab,       // Token
		0xc1, 0x32, // Content-Format (delta 12, length 1) = 50, application/json
		0xff,                                   // payload marker
		'{', '"', 't', '"', ':', '2', '1', '}', // payload
	}
	m, err := message.Decode(wire)
	if err != nil {
		log.Fatal(err)
	}
	cf, _ := m.Options.ContentFormat()
	fmt.Println(m.Type, m.Code, m.MessageID)
	fmt.Println(cf)
	fmt.Printf("%s\n", m.Payload)
	// Output:
	// ACK 2.05 Content 4660
	// application/json
	// {"t":21}
}
