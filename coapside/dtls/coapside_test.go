package dtls_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
)

// TestCoAPOverDTLS runs the project's CoAP server and client over the DTLS
// conns: the seam is net.PacketConn, and the handler sees the PSK identity
// through coapside.PeerIdentityProvider.
func TestCoAPOverDTLS(t *testing.T) {
	key, err := keys.ParseKey("hex:00112233445566778899aabbccddeeff")
	if err != nil {
		t.Fatal(err)
	}
	srvConn, err := dtls.Listen("udp", "127.0.0.1:0", dtls.ServerConfig{
		PSK: dtls.NewPSKStore(map[string]dtls.Secret{"greenhouse-1": key}),
	})
	if err != nil {
		t.Fatal(err)
	}
	var _ coapside.PeerIdentityProvider = srvConn
	// A DTLS peer proved its address with the handshake's cookie: CoAP
	// answers to it are not held to the amplification bound.
	var _ coapside.VerifiedTransport = srvConn
	srv := &coapside.Server{Handler: coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		id, ok := r.PeerIdentity()
		if !ok {
			id = "anonymous"
		}
		_, _ = fmt.Fprintf(w, "hello %s", id)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(srvConn) }()

	cliConn, err := dtls.NewClientConn("127.0.0.1:0", dtls.ClientConfig{
		Credentials: dtls.Credentials{PSKIdentity: "greenhouse-1", PSK: key},
	})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := coapside.NewClient(coapside.ClientOptions{Conn: cliConn})
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("coaps://127.0.0.1:%d/sensors/temp", srvConn.LocalAddr().(*net.UDPAddr).Port)
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cli.Get(ctx, url)
		cancel()
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		if string(resp.Payload) != "hello greenhouse-1" {
			t.Fatalf("GET %d: payload %q", i, resp.Payload)
		}
	}
	if st := srvConn.Stats(); st.HandshakesOK != 1 {
		t.Fatalf("server handshakes %d, want 1 (session reuse)", st.HandshakesOK)
	}
	_ = cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, coapside.ErrServerClosed) {
		t.Fatalf("Serve returned %v, want ErrServerClosed", err)
	}
	_ = srvConn.Close()
}
