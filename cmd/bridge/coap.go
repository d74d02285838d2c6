package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/spf13/cobra"
)

// Exit codes of "bridge coap".
const (
	exitOK        = 0 // 2.xx response
	exitCoAPError = 1 // 4.xx or 5.xx response
	exitUsage     = 2 // bad flags, arguments, URL or key syntax
	exitTransport = 3 // timeout, reset, DTLS handshake or socket error
)

const coapExitHelp = `Exit codes:
  0  the response was a success (2.xx)
  1  the response was an error (4.xx client error, 5.xx server error)
  2  usage error: bad flags, arguments, URL, content format or key syntax
  3  timeout or transport error: no answer, reset, DTLS handshake failure`

// coapFlags are the flags shared by every "bridge coap" subcommand.
type coapFlags struct {
	payload       string
	file          string
	contentFormat string
	accept        string
	non           bool
	timeout       time.Duration
	pskIdentity   string
	pskKey        string
	cert          string
	key           string
	ca            string
	pins          []string
	verbose       bool
	raw           bool
	count         int
	duration      time.Duration
	queries       []string
}

// usageError prints msg and makes the command exit with exitUsage.
func usageError(stderr io.Writer, format string, args ...any) error {
	fmt.Fprintf(stderr, "error: "+format+"\n", args...)
	return exitError{exitUsage}
}

// newCoapCmd builds "bridge coap" and its subcommands.
func newCoapCmd(stdout, stderr io.Writer) *cobra.Command {
	f := &coapFlags{}
	cmd := &cobra.Command{
		Use:   "coap get|post|put|delete|observe|discover URL",
		Short: "Send CoAP requests to a device (debugging client)",
		Long: `A CoAP client for poking devices: coap:// over UDP, coaps:// over DTLS with
a pre-shared key (--psk-identity, --psk-key) or certificates (--cert, --key,
--ca, --pin). The response payload goes to stdout, made readable by its
Content-Format: JSON pretty-printed, CBOR and SenML decoded to JSON, binary
as a hex dump (--raw prints the bytes as they are). -v shows the request and
response messages (type, code, message ID, token, options) on stderr.

Content formats (-t, --accept) are given by number, by a registered name
such as application/json, or by one of these short names:
` + wrapWords(strings.Join(message.ContentFormatNames(), ", "), 76, "  ") + `

Keys (--psk-key): hex:00112233..., base64:ABEiMw==, or a plain string.

` + coapExitHelp,
		Example: `  bridge coap get coap://127.0.0.1:5683/sensors/temp
  bridge coap put -t text -p on coap://127.0.0.1:5683/actuators/led
  echo '{"on":true}' | bridge coap post -t json -f - coap://[::1]/config
  bridge coap observe --count 5 coap://127.0.0.1:5683/sensors/temp
  bridge coap discover --query rt=temperature coap://127.0.0.1:5683
  bridge coap get --psk-identity sim-0 --psk-key secret coaps://127.0.0.1:5693/battery`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError(stderr, "missing subcommand: get, post, put, delete, observe or discover")
			}
			return usageError(stderr, "unknown subcommand %q: want get, post, put, delete, observe or discover", args[0])
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError(stderr, "%v", err)
	})
	pf := cmd.PersistentFlags()
	pf.StringVarP(&f.contentFormat, "content-format", "t", "", "Content-Format of the payload (name or number)")
	pf.StringVar(&f.accept, "accept", "", "Accept option: the Content-Format wanted in the response")
	pf.BoolVar(&f.non, "non", false, "send a non-confirmable (NON) request")
	pf.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for the response (observe: for the first one)")
	pf.StringVar(&f.pskIdentity, "psk-identity", "", "DTLS PSK identity (coaps://)")
	pf.StringVar(&f.pskKey, "psk-key", "", "DTLS pre-shared key: hex:..., base64:... or a plain string")
	pf.StringVar(&f.cert, "cert", "", "client certificate PEM file (coaps://)")
	pf.StringVar(&f.key, "key", "", "client private key PEM file (coaps://)")
	pf.StringVar(&f.ca, "ca", "", "CA certificates PEM file to verify the server (coaps://)")
	pf.StringArrayVar(&f.pins, "pin", nil, `accept the server's certificate by its key: "sha256:<hex of the SPKI digest>" (coaps://; repeatable)`)
	pf.BoolVarP(&f.verbose, "verbose", "v", false, "show request and response messages on stderr")
	pf.BoolVar(&f.raw, "raw", false, "print payloads as raw bytes, without decoding")

	withPayload := func(c *cobra.Command) *cobra.Command {
		c.Flags().StringVarP(&f.payload, "payload", "p", "", "request payload")
		c.Flags().StringVarP(&f.file, "file", "f", "", `read the payload from a file ("-" for stdin)`)
		return c
	}
	method := func(name string, code message.Code, short string) *cobra.Command {
		return &cobra.Command{
			Use:   name + " URL",
			Short: short,
			Long:  short + ".\n\n" + coapExitHelp,
			Args:  urlArg(stderr),
			RunE: func(c *cobra.Command, args []string) error {
				return exitFor(runCoapRequest(c.Context(), f, code, args[0], c.InOrStdin(), stdout, stderr))
			},
		}
	}
	observe := &cobra.Command{
		Use:   "observe URL",
		Short: "Observe a resource (RFC 7641) and print every notification until interrupted",
		Long: `Register as an observer and print each notification as it arrives, until
Ctrl-C or SIGTERM (the observation is then deregistered), --count
notifications (the first response included) or --duration.

` + coapExitHelp,
		Args: urlArg(stderr),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			return exitFor(runCoapObserve(ctx, f, args[0], stdout, stderr))
		},
	}
	observe.Flags().IntVar(&f.count, "count", 0, "stop after this many notifications (0: no limit)")
	observe.Flags().DurationVar(&f.duration, "duration", 0, "stop after this long (0: no limit)")
	discover := &cobra.Command{
		Use:   "discover URL",
		Short: "List a device's resources (GET /.well-known/core, RFC 6690) as a table",
		Long: `Fetch /.well-known/core (a URL without a path means it) and print the links
as a table of path, rt, if, ct, obs and sz. --query filters (rt=temperature,
href=/sensors/*, obs) are sent to the device and applied again locally.

` + coapExitHelp,
		Args: urlArg(stderr),
		RunE: func(c *cobra.Command, args []string) error {
			return exitFor(runCoapDiscover(c.Context(), f, args[0], stdout, stderr))
		},
	}
	discover.Flags().StringArrayVar(&f.queries, "query", nil, "filter such as rt=temperature (repeatable)")

	cmd.AddCommand(
		method("get", message.GET, "Send a GET and print the response"),
		withPayload(method("post", message.POST, "Send a POST with a payload and print the response")),
		withPayload(method("put", message.PUT, "Send a PUT with a payload and print the response")),
		method("delete", message.DELETE, "Send a DELETE and print the response"),
		observe,
		discover,
	)
	return cmd
}

// wrapWords breaks s into lines of at most width bytes at spaces, each
// starting with indent.
func wrapWords(s string, width int, indent string) string {
	var b strings.Builder
	line := indent
	for _, w := range strings.Fields(s) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	b.WriteString(line)
	return b.String()
}

// urlArg requires exactly one URL argument.
func urlArg(stderr io.Writer) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usageError(stderr, "want exactly one URL argument, got %d", len(args))
		}
		return nil
	}
}

// signalContext ends on SIGINT or SIGTERM.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// exitFor passes exit codes through and turns a zero code into success.
func exitFor(code int) error {
	if code == exitOK {
		return nil
	}
	return exitError{code}
}

// readPayload returns the request body from -p, or -f (a file, or stdin
// for "-"). Giving both is an error.
func readPayload(f *coapFlags, stdin io.Reader) ([]byte, error) {
	switch {
	case f.payload != "" && f.file != "":
		return nil, errors.New("give the payload with -p or -f, not both")
	case f.file == "-":
		return io.ReadAll(stdin)
	case f.file != "":
		return os.ReadFile(f.file)
	}
	return []byte(f.payload), nil
}
