// Command bridge connects CoAP devices to MQTT, driven by rule files.
//
//	bridge [run] [--config config.toml]   run the bridge (default command)
//	bridge check [--config config.toml]   validate config and rules
//	bridge route coap|mqtt ...            dry run of a message through the rules
//	bridge version                        print version information
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/coap-mqtt/bridge/bridge"
	"github.com/coap-mqtt/bridge/rules"
	"github.com/spf13/cobra"
)

// Set at link time: -ldflags "-X main.version=v1.2.3 -X main.commit=abc123".
var (
	version = "dev"
	commit  = ""
)

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// exitError carries a process exit code through cobra.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// execute runs the CLI with args and returns the process exit code.
func execute(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case strings.HasPrefix(err.Error(), "unknown command"):
		// cobra's own: a mistyped command is a usage error.
		fmt.Fprintln(stderr, "error:", err)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
}

// noArgs refuses positional arguments as a usage error (exit 2).
func noArgs(stderr io.Writer) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError(stderr, "unknown command or argument %q for %q", args[0], cmd.CommandPath())
		}
		return nil
	}
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	var cfgPath string
	root := &cobra.Command{
		Use:           "bridge",
		Short:         "CoAP <-> MQTT bridge",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBridge(cmd.Context(), cfgPath, cmd.Flags().Changed("config"), stderr)
		},
	}
	root.PersistentFlags().StringVarP(&cfgPath, "config", "c", "config.toml", "config file (TOML)")
	// A bad flag is a usage error (exit 2) for every command that has no
	// handler of its own.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(stderr, "%v", err) })

	run := &cobra.Command{
		Use:   "run",
		Short: "Run the bridge (the default command)",
		Args:  noArgs(stderr),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBridge(cmd.Context(), cfgPath, cmd.Flags().Changed("config"), stderr)
		},
	}
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate config and rules; print every error as file:line: message",
		Args:  noArgs(stderr),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return checkConfig(cfgPath, cmd.Flags().Changed("config"), stdout, stderr)
		},
	}
	ver := &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and Go version",
		Args:  noArgs(stderr),
		Run: func(*cobra.Command, []string) {
			fmt.Fprintln(stdout, versionString())
		},
	}
	root.AddCommand(run, check, ver, newHealthCmd(&cfgPath, stdout, stderr), newCoapCmd(stdout, stderr), newSimCmd(stdout, stderr), newRouteCmd(&cfgPath, stdout, stderr), newBenchCmd(stdout, stderr))
	return root
}

func versionString() string {
	c := commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("bridge %s (commit %s, %s %s/%s)", version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// checkConfig validates config and rules, printing every problem.
func checkConfig(path string, explicit bool, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(path, explicit)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError{1}
	}
	sum, err := bridge.Check(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError{1}
	}
	for _, w := range append(envWarnings(os.Environ()), bridge.RuleWarnings(cfg)...) {
		fmt.Fprintln(stderr, "warning:", w)
	}
	fmt.Fprintf(stdout, "%s: ok (%s)\n", displayName(cfg.File), sum)
	return nil
}

func runBridge(ctx context.Context, path string, explicit bool, stderr io.Writer) error {
	cfg, err := loadConfig(path, explicit)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError{1}
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Info("starting", "version", version, "config", displayName(cfg.File))
	for _, w := range append(envWarnings(os.Environ()), bridge.RuleWarnings(cfg)...) {
		logger.Warn(w)
	}
	b, err := bridge.New(cfg, logger)
	if err != nil {
		notStarted(logger, cfg.Log, stderr, err)
		return exitError{1}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				logger.Info("SIGHUP: reloading rules")
				b.TriggerReload()
			}
		}
	}()
	if err := b.Run(ctx); err != nil {
		logger.Error("bridge stopped", "err", err)
		return exitError{1}
	}
	logger.Info("stopped")
	return nil
}

// notStarted reports why the bridge did not start: as `bridge check`
// prints it (file:line: message) in text logs, read by people; as one
// record per problem, with its file and line, in JSON logs, read by a log
// pipeline that takes only JSON.
func notStarted(logger *slog.Logger, c bridge.LogConfig, w io.Writer, err error) {
	if c.Format != "json" {
		fmt.Fprintln(w, err)
		return
	}
	var es rules.Errors
	if !errors.As(err, &es) {
		logger.Error("not started", "err", err)
		return
	}
	for _, e := range es {
		logger.Error("not started: a rule file does not load", "file", e.File, "line", e.Line, "err", e.Msg)
	}
}

func newLogger(c bridge.LogConfig, w io.Writer) (*slog.Logger, error) {
	level, err := bridge.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
