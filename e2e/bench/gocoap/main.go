// Command gocoap is a CoAP server built on github.com/plgd-dev/go-coap/v3
// for "e2e/bench/run.sh": it answers POST or PUT /ingest with 2.04 Changed
// and GET /ping with "pong", the same resources as the bare coapside
// server, so the two compare request for request. It lives in its own
// module so the bridge's go.mod does not depend on go-coap.
package main

import (
	"bytes"
	"flag"
	"log"

	coap "github.com/plgd-dev/go-coap/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5688", "UDP listen address")
	flag.Parse()
	r := mux.NewRouter()
	pong := []byte("pong")
	if err := r.Handle("/ping", mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) {
		if m.Code() != codes.GET {
			_ = w.SetResponse(codes.MethodNotAllowed, message.TextPlain, nil)
			return
		}
		_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader(pong))
	})); err != nil {
		log.Fatal(err)
	}
	if err := r.Handle("/ingest", mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) {
		switch m.Code() {
		case codes.POST, codes.PUT:
			_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
		default:
			_ = w.SetResponse(codes.MethodNotAllowed, message.TextPlain, nil)
		}
	})); err != nil {
		log.Fatal(err)
	}
	log.Fatal(coap.ListenAndServe("udp", *listen, r))
}
