package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
)

// errUsage marks errors that are the caller's fault (exit code 2).
var errUsage = errors.New("usage")

// coapSession is a client for one command run, with the URL parsed once.
type coapSession struct {
	client *coapside.Client
	flags  *coapFlags
	url    *url.URL
	// opts are the URL's Uri-* options (RFC 7252 §6.4).
	opts message.Options
	// peer is the server's address, resolved once for coaps (the DTLS
	// session is with that address); nil for coap, where Do resolves.
	peer net.Addr
}

// newCoapSession validates the URL and flags and opens a client: plain UDP
// for coap://, a DTLS connection for coaps:// (RFC 7252 §9).
//
// For coaps the DTLS handshake runs first, bounded by --timeout, so a bad
// key or an untrusted certificate is reported as such rather than as a
// request that timed out.
func newCoapSession(ctx context.Context, f *coapFlags, rawURL string) (*coapSession, error) {
	u, uopts, err := uri.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if f.timeout <= 0 {
		return nil, fmt.Errorf("%w: --timeout must be positive", errUsage)
	}
	if f.contentFormat != "" {
		if _, err := parseContentFormat(f.contentFormat); err != nil {
			return nil, fmt.Errorf("%w: -t: %w", errUsage, err)
		}
	}
	if f.accept != "" {
		if _, err := parseContentFormat(f.accept); err != nil {
			return nil, fmt.Errorf("%w: --accept: %w", errUsage, err)
		}
	}
	secure := f.pskIdentity != "" || f.pskKey != "" || f.cert != "" || f.key != "" || f.ca != "" || len(f.pins) > 0
	opts := coapside.ClientOptions{Timeout: f.timeout}
	var conn *dtls.ClientConn
	switch {
	case u.Scheme == "coaps":
		creds, err := coapsCredentials(f)
		if err != nil {
			return nil, fmt.Errorf("%w: coaps credentials: %w", errUsage, err)
		}
		conn, err = dtls.NewClientConn("", dtls.ClientConfig{
			Credentials: creds,
			Limits:      dtls.Limits{HandshakeTimeout: f.timeout},
		})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		opts.Conn = conn
	case secure:
		return nil, fmt.Errorf("%w: DTLS flags need a coaps:// URL", errUsage)
	}
	c, err := coapside.NewClient(opts)
	if err != nil {
		if opts.Conn != nil {
			_ = opts.Conn.Close()
		}
		return nil, err
	}
	s := &coapSession{client: c, flags: f, url: u, opts: uopts}
	if conn != nil {
		if s.peer, err = handshake(ctx, c, conn, u, f.timeout); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	return s, nil
}

// coapsCredentials builds the DTLS credentials of the flags with the
// builder the bridge uses for its devices.
func coapsCredentials(f *coapFlags) (dtls.Credentials, error) {
	d := dtls.DeviceFiles{PSKIdentity: f.pskIdentity, CertFile: f.cert, KeyFile: f.key, CAFile: f.ca}
	if f.pskKey != "" {
		k, err := keys.ParseKey(f.pskKey)
		if err != nil {
			return dtls.Credentials{}, err
		}
		d.PSK = k
	}
	for _, s := range f.pins {
		p, err := keys.ParsePin(s)
		if err != nil {
			return dtls.Credentials{}, err
		}
		d.Pins = append(d.Pins, p)
	}
	return dtls.LoadCredentials(d)
}

// handshake resolves the URL's server, as the client does for requests,
// and establishes the DTLS session with it; it returns the address.
func handshake(ctx context.Context, c *coapside.Client, conn *dtls.ClientConn, u *url.URL, timeout time.Duration) (net.Addr, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr, err := c.Resolve(ctx, &coapside.Request{URL: u})
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", u.Host, err)
	}
	if err := conn.Handshake(ctx, addr); err != nil {
		return nil, fmt.Errorf("DTLS handshake with %s: %w", addr, err)
	}
	return addr, nil
}

// request builds a request for the session's URL.
func (s *coapSession) request(method message.Code, payload []byte) *coapside.Request {
	return &coapside.Request{
		Method:  method,
		Type:    message.Confirmable,
		Options: slices.Clone(s.opts),
		Payload: payload,
		URL:     s.url,
		Peer:    s.peer,
	}
}

// requestOptions turns --non and --accept into request options.
func (s *coapSession) requestOptions() []coapside.RequestOption {
	var ro []coapside.RequestOption
	if s.flags.non {
		ro = append(ro, coapside.NonConfirmable())
	}
	if s.flags.accept != "" {
		mt, _ := parseContentFormat(s.flags.accept) // validated in newCoapSession
		ro = append(ro, coapside.WithAccept(mt))
	}
	return ro
}

// exitCode maps an error to the command's exit code and prints it.
func exitCode(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	var code message.Code
	switch {
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "error:", strings.TrimPrefix(err.Error(), "usage: "))
		return exitUsage
	case errors.As(err, &code) && code.IsError():
		fmt.Fprintln(stderr, "error:", err)
		return exitCoAPError
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintln(stderr, "error: timeout: no response:", err)
		return exitTransport
	}
	fmt.Fprintln(stderr, "error:", err)
	return exitTransport
}

// runCoapRequest sends one GET/POST/PUT/DELETE and prints the response.
func runCoapRequest(ctx context.Context, f *coapFlags, method message.Code, rawURL string, stdin io.Reader, stdout, stderr io.Writer) int {
	var payload []byte
	if method == message.POST || method == message.PUT {
		p, err := readPayload(f, stdin)
		if err != nil {
			return exitCode(stderr, fmt.Errorf("%w: payload: %w", errUsage, err))
		}
		payload = p
	}
	s, err := newCoapSession(ctx, f, rawURL)
	if err != nil {
		return exitCode(stderr, err)
	}
	defer s.client.Close()

	req := s.request(method, payload)
	if f.non {
		req.Type = message.NonConfirmable // RFC 7252 §2.2
	}
	if f.contentFormat != "" {
		mt, _ := parseContentFormat(f.contentFormat)
		req.Options = req.Options.SetContentFormat(mt)
	}
	if f.accept != "" {
		mt, _ := parseContentFormat(f.accept)
		req.Options = req.Options.SetUint(message.Accept, uint32(mt))
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	resp, err := s.client.Do(ctx, req)
	if f.verbose {
		mid := req.MessageID
		if resp != nil && resp.Type == message.Acknowledgement && req.Type == message.Confirmable {
			mid = resp.MessageID // RFC 7252 §4.2: the ACK echoes the CON's message ID
		}
		writeMessage(stderr, messageSummary{
			Dir: ">", Type: req.Type, Code: req.Method, MessageID: mid,
			Token: req.Token, Options: req.Options, Payload: len(req.Payload), Peer: hostOf(req.URL),
		})
	}
	if err != nil {
		return exitCode(stderr, err)
	}
	if f.verbose {
		writeMessage(stderr, messageSummary{
			Dir: "<", Type: resp.Type, Code: resp.Code, MessageID: resp.MessageID,
			Token: resp.Token, Options: resp.Options, Payload: len(resp.Payload), Peer: addrString(resp.Peer),
		})
	}
	return printResponse(resp.Code, resp.Options, resp.Payload, f.raw, stdout, stderr)
}

// printResponse writes a success payload to stdout, or the code and the
// diagnostic payload of an error response to stderr (RFC 7252 §5.5.2).
func printResponse(code message.Code, opts message.Options, payload []byte, raw bool, stdout, stderr io.Writer) int {
	if code.IsError() {
		diag := strings.TrimSpace(string(payload))
		if diag != "" {
			fmt.Fprintf(stderr, "%s: %s\n", code, diag)
		} else {
			fmt.Fprintln(stderr, code)
		}
		return exitCoAPError
	}
	if err := writePayload(stdout, opts, payload, raw); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return exitTransport
	}
	return exitOK
}

// runCoapObserve observes a resource and prints each notification until
// ctx ends, --count notifications have arrived or --duration has passed.
func runCoapObserve(ctx context.Context, f *coapFlags, rawURL string, stdout, stderr io.Writer) int {
	if f.count < 0 || f.duration < 0 {
		return exitCode(stderr, fmt.Errorf("%w: --count and --duration must not be negative", errUsage))
	}
	s, err := newCoapSession(ctx, f, rawURL)
	if err != nil {
		return exitCode(stderr, err)
	}
	defer s.client.Close()
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}

	var (
		mu       sync.Mutex
		seen     int
		lastCode message.Code
		enough   = make(chan struct{})
		once     sync.Once
	)
	fn := func(n coapside.Notification) {
		mu.Lock()
		defer mu.Unlock()
		if f.count > 0 && seen >= f.count {
			return
		}
		seen++
		lastCode = n.Code
		if f.verbose {
			obs := "no Observe"
			if n.HasSeq {
				obs = fmt.Sprintf("Observe=%d", n.Seq)
			}
			fmt.Fprintf(stderr, "< %s %s from %s at %s\n", n.Code, obs, addrString(n.Peer), n.Received.Format(time.RFC3339Nano))
			for _, o := range n.Options {
				fmt.Fprintf(stderr, "    %s: %s\n", optionName(o.ID), formatOption(o))
			}
		}
		if n.Code.IsError() {
			fmt.Fprintln(stderr, n.Code, strings.TrimSpace(string(n.Payload)))
		} else if err := writePayload(stdout, n.Options, n.Payload, f.raw); err != nil {
			fmt.Fprintln(stderr, "error:", err)
		}
		if f.count > 0 && seen >= f.count {
			once.Do(func() { close(enough) })
		}
	}
	// The observation lives as long as ctx; the client's Timeout bounds the
	// registration exchange.
	o, err := s.client.Observe(ctx, rawURL, fn, s.requestOptions()...)
	switch {
	case errors.Is(err, coapside.ErrNotObservable):
		fmt.Fprintln(stderr, "warning: the resource is not observable (the response had no Observe option)")
		return exitOK
	case err != nil:
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return exitOK // interrupted before the first response
		}
		return exitCode(stderr, err)
	}
	select {
	case <-enough:
	case <-ctx.Done():
	case <-o.Done():
	}
	cctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	_ = o.Cancel(cctx) // RFC 7641 §3.6: deregister actively
	o.Wait()
	mu.Lock()
	code := lastCode
	mu.Unlock()
	// Ending by our own Cancel, Ctrl-C or --duration is the normal way out.
	if err := o.Err(); err != nil && !errors.Is(err, coapside.ErrCanceled) && (ctx.Err() == nil || !errors.Is(err, ctx.Err())) {
		return exitCode(stderr, err)
	}
	if code.IsError() {
		return exitCoAPError
	}
	return exitOK
}

// runCoapDiscover prints a device's /.well-known/core as a table.
func runCoapDiscover(ctx context.Context, f *coapFlags, rawURL string, stdout, stderr io.Writer) int {
	if _, err := linkformat.ParseFilters(f.queries); err != nil {
		return exitCode(stderr, fmt.Errorf("%w: --query: %w", errUsage, err))
	}
	s, err := newCoapSession(ctx, f, rawURL)
	if err != nil {
		return exitCode(stderr, err)
	}
	defer s.client.Close()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	links, err := s.client.Discover(ctx, rawURL, f.queries...)
	if err != nil {
		return exitCode(stderr, err)
	}
	if f.raw {
		b, err := linkformat.Marshal(links)
		if err != nil {
			return exitCode(stderr, err)
		}
		fmt.Fprintln(stdout, string(b))
		return exitOK
	}
	writeLinkTable(stdout, links)
	return exitOK
}

// writeLinkTable prints links as aligned columns.
func writeLinkTable(w io.Writer, links []linkformat.Link) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tRT\tIF\tCT\tOBS\tSZ")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, l := range links {
		obs := ""
		if l.Has("obs") {
			obs = "yes"
		}
		sz, _ := l.Param("sz")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Target,
			dash(strings.Join(l.Values("rt"), " ")),
			dash(strings.Join(l.Values("if"), " ")),
			dash(strings.Join(l.Values("ct"), " ")),
			dash(obs), dash(sz))
	}
	_ = tw.Flush()
}

func hostOf(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Host
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
