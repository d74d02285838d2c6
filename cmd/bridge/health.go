package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// newHealthCmd asks a running bridge's /readyz (or another health URL) and
// exits 0 when it answers 200: a health check for containers whose image
// has no shell or curl. Without --url it asks http.listen of the config
// (*cfgPath, with the environment's overrides), as the bridge serves it.
func newHealthCmd(cfgPath *string, stdout, stderr io.Writer) *cobra.Command {
	var url string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Check a running bridge's readiness endpoint (exit 0 when ready)",
		Args:  noArgs(stderr),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout <= 0 {
				return usageError(stderr, "--timeout must be positive, got %v", timeout)
			}
			if !cmd.Flags().Changed("url") {
				u, err := readyzURL(*cfgPath, cmd.Flags().Changed("config"))
				if err != nil {
					fmt.Fprintln(stderr, "error:", err)
					return exitError{2}
				}
				url = u
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				fmt.Fprintln(stdout, "not reachable:", err)
				return exitError{1}
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			fmt.Fprintf(stdout, "%d %s", resp.StatusCode, body)
			if resp.StatusCode != http.StatusOK {
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "health URL (default: /readyz on the config's http.listen, e.g. http://127.0.0.1:9100/readyz)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "request timeout")
	return cmd
}

// errNoHTTP: the config serves no /readyz to ask.
var errNoHTTP = errors.New(`http.listen is "": the bridge serves no /readyz; give --url`)

// readyzURL is the /readyz the bridge of the config at path serves: on
// http.listen, at the loopback address when it listens on every address.
func readyzURL(path string, explicit bool) (string, error) {
	cfg, err := loadConfig(path, explicit)
	if err != nil {
		return "", err
	}
	if cfg.HTTP.Listen == "" {
		return "", errNoHTTP
	}
	host, port, err := net.SplitHostPort(cfg.HTTP.Listen)
	if err != nil {
		return "", fmt.Errorf("http.listen %q: %w", cfg.HTTP.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}
