package coapside

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
)

// TestClientOnServerEndpointSendsFromServerSocket: a device that talks to
// a server from its own socket is asked back from the server's socket (the
// address a NAT in between let through), and the response is matched on
// the server's endpoint.
func TestClientOnServerEndpointSendsFromServerSocket(t *testing.T) {
	// The "bridge": records the endpoint and address of whoever pushes.
	type pushed struct {
		ep   *Endpoint
		peer net.Addr
	}
	pushes := make(chan pushed, 1)
	srv, srvAddr := startServer(t, HandlerFunc(func(w ResponseWriter, r *Request) {
		pushes <- pushed{r.Endpoint(), r.Peer}
		w.SetCode(message.Changed)
	}), ServerOptions{EndpointOptions: fastOpts()})

	// The "device": pushes and serves from one socket.
	froms := make(chan net.Addr, 1)
	dev, devAddr := startServer(t, HandlerFunc(func(w ResponseWriter, r *Request) {
		froms <- r.Peer
		w.SetCode(message.Content)
		w.Write([]byte("on"))
	}), ServerOptions{EndpointOptions: fastOpts()})
	devClient, err := NewClient(ClientOptions{Endpoint: dev.Endpoints()[0]})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := devClient.Post(ctx, "coap://"+srvAddr.String()+"/up", message.TextPlain, []byte("1"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("push: %v %v", resp, err)
	}
	p := <-pushes
	if p.peer.String() != devAddr.String() {
		t.Fatalf("push came from %v, want the device's server socket %v", p.peer, devAddr)
	}

	back, err := NewClient(ClientOptions{Endpoint: p.ep})
	if err != nil {
		t.Fatal(err)
	}
	req, err := NewRequest(message.GET, "coap://"+p.peer.String()+"/led", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = back.Do(ctx, req)
	if err != nil || resp.Code != message.Content || string(resp.Payload) != "on" {
		t.Fatalf("request back: %v %v", resp, err)
	}
	if from := <-froms; from.String() != srvAddr.String() {
		t.Errorf("device was asked from %v, want the server's socket %v", from, srvAddr)
	}
	// Closing a client on a shared endpoint leaves the endpoint serving.
	if err := back.Close(); err != nil {
		t.Fatal(err)
	}
	if err := devClient.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.Endpoints()[0].Done():
		t.Fatal("closing a client on the server's endpoint closed it")
	default:
	}
	resp, err = devClient.Post(ctx, "coap://"+srvAddr.String()+"/up", message.TextPlain, []byte("2"))
	if err != nil || resp.Code != message.Changed {
		t.Fatalf("push after the shared clients closed: %v %v", resp, err)
	}
	<-pushes
}

// TestClientOnServerEndpointAgainstLibcoap: a request sent on a server's
// endpoint gets libcoap's answer.
func TestClientOnServerEndpointAgainstLibcoap(t *testing.T) {
	addr := peer.StartCoapServer(t)
	srv, _ := startServer(t, nil, ServerOptions{EndpointOptions: fastOpts()})
	c, err := NewClient(ClientOptions{Endpoint: srv.Endpoints()[0]})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, "coap://"+addr.String()+"/")
	if err != nil || resp.Code != message.Content || len(resp.Payload) == 0 {
		t.Fatalf("GET libcoap from the server's endpoint: %v %v", resp, err)
	}
}
