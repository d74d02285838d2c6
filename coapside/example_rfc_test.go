package coapside_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// An observable, discoverable resource: GET with Observe=0 registers, the
// application calls Notify when the value changes, and /.well-known/core
// lists the resource. Block-wise transfers need no code: the server's
// block-wise layer slices large responses and reassembles large requests.
func ExampleObserveServer() {
	obs, err := coapside.NewObserveServer(coapside.ObserveOptions{MaxAge: 60})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = obs.Run(ctx) }()

	var temp atomic.Value
	temp.Store("21.5")
	mux := coapside.NewServeMux()
	mux.HandleResource("GET /sensors/temp", obs.Observable(coapside.HandlerFunc(
		func(w coapside.ResponseWriter, _ *coapside.Request) {
			w.SetContentFormat(message.TextPlain)
			_, _ = w.Write([]byte(temp.Load().(string)))
		})), linkformat.Resource{ResourceTypes: []string{"temperature-c"}, Observable: true})

	srv := &coapside.Server{Handler: mux}
	go func() { _ = srv.ListenAndServe("127.0.0.1:0") }()
	defer srv.Close()

	// Later, when the value changes:
	temp.Store("22.0")
	obs.Notify("/sensors/temp")
}

// Observing a device resource, falling back to polling when the resource
// cannot be observed, and re-observing when the observation ends.
func ExampleClient_Observe() {
	c, err := coapside.NewClient(coapside.ClientOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel() // ending ctx deregisters with GET Observe=1

	o, err := c.Observe(ctx, "coap://127.0.0.1:5683/sensors/temp", func(n coapside.Notification) {
		fmt.Printf("%s (seq %d)\n", n.Payload, n.Seq)
	})
	switch {
	case errors.Is(err, coapside.ErrNotObservable):
		// poll instead
	case err != nil:
		// retry with backoff
	default:
		<-o.Done() // o.Err() says why: server ended it, lost, canceled
	}
}
