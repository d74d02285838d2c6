// Command benchserver is a minimal CoAP server built on coapside for load
// comparisons with ../shared/tools/coapload: GET /ping answers "pong",
// POST or PUT /ingest answers 2.04 Changed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5690", "UDP listen address")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	noBatch := flag.Bool("nobatch", false, "disable recvmmsg/sendmmsg batching")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*listen, *cpuprofile, *noBatch, log); err != nil {
		log.Error("benchserver failed", "err", err)
		os.Exit(1)
	}
}

func run(listen, cpuprofile string, noBatch bool, log *slog.Logger) error {
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	mux := coapside.NewServeMux()
	pong := []byte("pong")
	mux.HandleFunc("GET /ping", func(w coapside.ResponseWriter, r *coapside.Request) {
		w.SetContentFormat(message.TextPlain)
		_, _ = w.Write(pong)
	})
	ingest := func(w coapside.ResponseWriter, r *coapside.Request) { w.SetCode(message.Changed) }
	mux.HandleFunc("POST /ingest", ingest)
	mux.HandleFunc("PUT /ingest", ingest)

	conn, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &coapside.Server{Handler: mux, Options: coapside.ServerOptions{EndpointOptions: coapside.EndpointOptions{Logger: log, DisableBatching: noBatch}}}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("benchserver listening", "addr", conn.LocalAddr().String())
	err = srv.Serve(conn)
	if err == coapside.ErrServerClosed {
		return nil
	}
	return err
}
