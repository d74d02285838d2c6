package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// httpSide serves /metrics, /healthz and /readyz, and what mounts add
// (the status page).
type httpSide struct {
	srv *http.Server

	mu      sync.Mutex
	ln      net.Listener // set by listen
	serving bool
	closed  bool
	done    chan struct{} // closed when Serve has returned
}

// newHTTPSide serves the metrics of reg; live says why the bridge is not
// live, notReady lists the components that are not ready, and detail
// (may be nil) adds lines to /readyz's answer. Each of mounts adds its
// handlers to the server's mux.
func newHTTPSide(reg *prometheus.Registry, live func() error, notReady func() []string, detail func() string, mounts ...func(*http.ServeMux)) *httpSide {
	mux := http.NewServeMux()
	for _, m := range mounts {
		m(mux)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := live(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not live: %v\n", err)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := live(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not live: %v\n", err)
			return
		}
		more := ""
		if detail != nil {
			more = detail()
		}
		if missing := notReady(); len(missing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n%s", missing, more)
			return
		}
		fmt.Fprintf(w, "ready\n%s", more)
	})
	return &httpSide{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, done: make(chan struct{})}
}

// listen binds addr; Run serves it.
func (h *httpSide) listen(addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w", addr, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		ln.Close()
		return nil, http.ErrServerClosed
	}
	h.ln = ln
	return ln.Addr(), nil
}

// Run serves the bound address until Shutdown.
func (h *httpSide) Run(context.Context) error {
	h.mu.Lock()
	if h.closed || h.serving || h.ln == nil {
		h.mu.Unlock()
		return nil
	}
	h.serving = true
	h.mu.Unlock()
	defer close(h.done)
	if err := h.srv.Serve(h.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// Shutdown stops serving: requests in progress may finish until ctx ends,
// then their connections are closed.
func (h *httpSide) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	serving, ln := h.serving, h.ln
	h.mu.Unlock()
	if !serving {
		if ln != nil {
			ln.Close()
		}
		return nil
	}
	err := h.srv.Shutdown(ctx)
	if err != nil {
		h.srv.Close() // cut what is still open
	}
	<-h.done
	return err
}
