package coapside_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// A Server with a ServeMux, shaped like net/http: a pattern routes by
// method and Uri-Path, {name} captures one segment, and a handler answers
// with a code, options and a payload. coapside.Error turns an error that
// wraps a message.Code into that response, with the error text as the
// diagnostic payload (RFC 7252 §5.5.2).
func ExampleServeMux() {
	mux := coapside.NewServeMux()
	mux.HandleFunc("GET /sensors/{name}", func(w coapside.ResponseWriter, r *coapside.Request) {
		name := r.PathValue("name")
		if name != "temp" {
			coapside.Error(w, fmt.Errorf("no sensor %q: %w", name, message.NotFound))
			return
		}
		w.SetContentFormat(message.TextPlain)
		_, _ = w.Write([]byte("21.5"))
	})

	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &coapside.Server{Handler: mux}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(conn) }()

	c, err := coapside.NewClient(coapside.ClientOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := "coap://" + conn.LocalAddr().String()
	show := func(resp *coapside.Response, err error) {
		switch {
		case err != nil:
			fmt.Println(err)
		case len(resp.Payload) == 0:
			fmt.Println(resp.Code)
		default:
			fmt.Printf("%v: %s\n", resp.Code, resp.Payload)
		}
	}
	show(c.Get(ctx, base+"/sensors/temp"))
	show(c.Get(ctx, base+"/sensors/wind"))
	show(c.Put(ctx, base+"/sensors/temp", message.TextPlain, []byte("30")))
	show(c.Get(ctx, base+"/actuators/fan"))

	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-served)
	// Output:
	// 2.05 Content: 21.5
	// 4.04 Not Found: no sensor "wind": 4.04 Not Found
	// 4.05 Method Not Allowed
	// 4.04 Not Found
	// coap: server closed
}

// Client.Do sends a request built by hand, for what Get, Post, Put and
// Delete do not cover; here a non-confirmable GET with a query and an
// Accept option. Do follows block-wise transfers (RFC 7959) on its own.
func ExampleClient_Do() {
	// A device to ask.
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	device := &coapside.Server{Handler: coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
		unit, _ := r.Query("unit")
		accept, _ := r.Options.Uint(message.Accept)
		w.SetContentFormat(message.MediaType(accept))
		fmt.Fprintf(w, "%v %v %s unit=%s", r.Type, r.Method, r.Path(), unit)
	})}
	served := make(chan error, 1)
	go func() { served <- device.Serve(conn) }()
	defer func() { _ = device.Close(); <-served }()

	c, err := coapside.NewClient(coapside.ClientOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	req, err := coapside.NewRequest(message.GET, "coap://"+conn.LocalAddr().String()+"/sensors/temp?unit=C", nil)
	if err != nil {
		log.Fatal(err)
	}
	req.Type = message.NonConfirmable
	req.Options = req.Options.SetUint(message.Accept, uint32(message.TextPlain))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, req)
	if err != nil {
		log.Fatal(err)
	}
	cf, _ := resp.Options.ContentFormat()
	fmt.Printf("%v %v (%v): %s\n", resp.Type, resp.Code, cf, resp.Payload)
	// Output:
	// NON 2.05 Content (text/plain;charset=utf-8): NON GET /sensors/temp unit=C
}
