package dtls_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// CoAP over DTLS with a pre-shared key (RFC 7252 §9.1.3.1): both ends are
// net.PacketConns, so coapside's Server and Client run over them unchanged,
// and a handler learns who the device is from Request.PeerIdentity. A key
// is a Secret, which never prints.
func Example() {
	key, err := keys.ParseKey("hex:00112233445566778899aabbccddeeff")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("key:", key)

	// The bridge's side: a DTLS listener that knows one device's key.
	srvConn, err := dtls.Listen("udp", "127.0.0.1:0", dtls.ServerConfig{
		PSK: dtls.NewPSKStore(map[string]dtls.Secret{"greenhouse-1": key}),
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := &coapside.Server{Handler: coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		id, _ := r.PeerIdentity()
		fmt.Printf("server: %v %s from %s: %s\n", r.Method, r.Path(), id, r.Payload)
		w.SetCode(message.Changed)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(srvConn) }()

	// The device's side: the handshake runs on the first request.
	cliConn, err := dtls.NewClientConn("127.0.0.1:0", dtls.ClientConfig{
		Credentials: dtls.Credentials{PSKIdentity: "greenhouse-1", PSK: key},
	})
	if err != nil {
		log.Fatal(err)
	}
	cli, err := coapside.NewClient(coapside.ClientOptions{Conn: cliConn})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := fmt.Sprintf("coaps://127.0.0.1:%d/telemetry/temp", srvConn.LocalAddr().(*net.UDPAddr).Port)
	resp, err := cli.Post(ctx, url, message.TextPlain, []byte("21.5"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("client:", resp.Code)

	_ = cli.Close()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	<-served
	// Output:
	// key: [redacted]
	// server: POST /telemetry/temp from greenhouse-1: 21.5
	// client: 2.04 Changed
}
