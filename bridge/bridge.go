// Package bridge wires the CoAP side, the MQTT side and the rules together
// and owns their lifecycle: start, reload, health, metrics and shutdown.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ShutdownGrace bounds how long a graceful shutdown may take.
const ShutdownGrace = 5 * time.Second

// Bridge is one running instance. Create it with New and start it with Run.
type Bridge struct {
	cfg    Config
	log    *slog.Logger
	reg    *prometheus.Registry
	health *health

	mu       sync.Mutex
	httpAddr net.Addr // bound address of the HTTP endpoint, once listening
}

// New validates cfg and prepares a bridge; nothing listens until Run.
func New(cfg Config, logger *slog.Logger) (*Bridge, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Bridge{cfg: cfg, log: logger, reg: reg, health: newHealth()}, nil
}

// Check validates cfg and the rule files it names without starting
// anything, and returns a one-line summary.
func Check(cfg Config) (string, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	files, err := RuleFiles(cfg)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d rule files", len(files)), nil
}

// RuleFiles expands the config's rule globs, relative to the config file.
func RuleFiles(cfg Config) ([]string, error) {
	base := "."
	if cfg.File != "" {
		base = filepath.Dir(cfg.File)
	}
	var files []string
	seen := map[string]bool{}
	for _, g := range cfg.Rules {
		if !filepath.IsAbs(g) {
			g = filepath.Join(base, g)
		}
		m, err := filepath.Glob(g)
		if err != nil {
			return nil, fmt.Errorf("rules: bad pattern %q: %w", g, err)
		}
		for _, f := range m {
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
	}
	return files, nil
}

// HTTPAddr returns the bound address of the metrics/health endpoint, or nil
// before it listens.
func (b *Bridge) HTTPAddr() net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.httpAddr
}

// Run starts every component and blocks until ctx ends, then shuts down
// within ShutdownGrace. It returns nil on a clean shutdown.
func (b *Bridge) Run(ctx context.Context) error {
	var srv *http.Server
	errc := make(chan error, 1)
	if b.cfg.HTTP.Listen != "" {
		ln, err := net.Listen("tcp", b.cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http listen %s: %w", b.cfg.HTTP.Listen, err)
		}
		b.mu.Lock()
		b.httpAddr = ln.Addr()
		b.mu.Unlock()
		srv = &http.Server{Handler: b.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		}()
		b.log.Info("http listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	b.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	if srv != nil {
		if err := srv.Shutdown(sctx); err != nil {
			runErr = errors.Join(runErr, fmt.Errorf("http shutdown: %w", err))
		}
	}
	return runErr
}

func (b *Bridge) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if missing := b.health.notReady(); len(missing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", missing)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}
