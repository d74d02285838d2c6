package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
	"github.com/spf13/cobra"
)

// benchIngress holds the "bench ingress" flags beyond the shared ones.
type benchIngress struct {
	benchFlags
	coapURL string
	method  string
}

func newBenchIngressCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &benchIngress{}
	cmd := &cobra.Command{
		Use:   "ingress",
		Short: "CoAP POSTs into the bridge, measured at the CoAP response and on MQTT",
		Long: `Send CoAP requests from -w workers (closed loop, or paced at --rate in
total) to --coap, where {n} is the device index 0..devices-1, and subscribe
to --topic on --mqtt to see what the bridge publishes. Reports the CoAP
rate and request -> response latency, the end-to-end rate and send ->
MQTT delivery latency, and loss: requests answered 2.xx whose message never
arrived within --drain after the load phase. An empty --topic measures the
CoAP side only, which also benchmarks any CoAP server (--method PUT for
servers without POST). When pacing, latency counts from the time a request
was due, so a stalled server is not hidden by the load waiting for it.

The bridge needs an ingress rule from the CoAP path to the topic; --rules
prints one for the default URL and topic.`,
		Example: `  bridge bench ingress --rules > rules/bench.toml
  bridge bench ingress -w 64 -d 10s --pid auto
  bridge bench ingress --coap 'coap://127.0.0.1:5683/telemetry/bench-{n}/temp' \
    --topic 'sensors/+/temp' --qos 1 --rate 2000 --json
  bridge bench ingress --coap coap://127.0.0.1:5690/ingest --topic ''`,
		Args: noArgs(stderr),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return usageError(stderr, "%v", err)
			}
			if o.rules {
				fmt.Fprint(stdout, o.rulesText())
				return nil
			}
			return runBench(cmd, &o.benchFlags, o.run, stdout, stderr)
		},
	}
	addBenchFlags(cmd, &o.benchFlags, "bench/+", stderr)
	fl := cmd.Flags()
	fl.StringVar(&o.coapURL, "coap", "coap://127.0.0.1:5683/bench/bench-{n}", "CoAP URL to send to; {n} is the device index")
	fl.StringVar(&o.method, "method", "POST", "POST or PUT")
	fl.BoolVar(&o.non, "non", false, "send non-confirmable requests (default confirmable)")
	fl.Bool("con", true, "send confirmable requests (the default)")
	return cmd
}

// rulesText is an ingress rule from the URL's path to the topic, with the
// segment holding {n} as {device}.
func (o *benchIngress) rulesText() string {
	path := o.coapURL
	if i := strings.Index(path, "://"); i >= 0 {
		path = path[i+3:]
	}
	if i := strings.IndexByte(path, '/'); i >= 0 {
		path = path[i:]
	} else {
		path = "/"
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i, s := range segs {
		if strings.Contains(s, "{n}") {
			segs[i] = "{device}"
		}
	}
	path = "/" + strings.Join(segs, "/")
	topic := strings.Replace(o.topic, "+", "{device}", 1)
	if topic == "" {
		topic = "bench/{device}"
	}
	return fmt.Sprintf(`# Rules for "bridge bench ingress": every POST/PUT to %s is published.
[[ingress]]
name    = "bench-ingress"
path    = %q
methods = ["POST", "PUT"]
topic   = %q
qos     = %d
`, path, path, topic, o.qos)
}

// benchTarget is one device's URL, parsed and resolved once.
type benchTarget struct {
	url  *url.URL
	opts message.Options
	addr net.Addr
}

func (o *benchIngress) targets() ([]benchTarget, int, error) {
	if !strings.Contains(o.coapURL, "{n}") {
		o.devices = 1
	}
	var out []benchTarget
	port := 0
	for i := range o.devices {
		raw := strings.ReplaceAll(o.coapURL, "{n}", strconv.Itoa(i))
		u, opts, err := uri.Parse(raw)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: --coap: %w", errUsage, err)
		}
		if u.Scheme != "coap" {
			return nil, 0, fmt.Errorf("%w: --coap: want a coap:// URL, got %q", errUsage, raw)
		}
		addr, err := net.ResolveUDPAddr("udp", u.Host)
		if err != nil {
			if u.Port() == "" {
				addr, err = net.ResolveUDPAddr("udp", net.JoinHostPort(u.Hostname(), "5683"))
			}
			if err != nil {
				return nil, 0, fmt.Errorf("%w: --coap: %w", errUsage, err)
			}
		}
		if i == 0 && addr.IP.IsLoopback() {
			port = addr.Port
		}
		out = append(out, benchTarget{url: u, opts: opts, addr: addr})
	}
	return out, port, nil
}

// run runs one ingress benchmark.
func (o *benchIngress) run(ctx context.Context) (*benchReport, error) {
	var method message.Code
	switch strings.ToUpper(o.method) {
	case "POST":
		method = message.POST
	case "PUT":
		method = message.PUT
	default:
		return nil, fmt.Errorf("%w: --method: want POST or PUT, got %q", errUsage, o.method)
	}
	targets, localPort, err := o.targets()
	if err != nil {
		return nil, err
	}
	pids, err := resolvePIDs(o.pids, localPort)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	watch, err := newProcWatch(pids)
	if err != nil {
		return nil, err
	}
	mk := newBenchMarker()
	r := &benchReport{Mode: "ingress", Target: o.coapURL, Workers: o.workers, Devices: len(targets),
		Type: "CON", QoS: o.qos, Size: o.size, RateGoal: o.rate}
	if o.non {
		r.Type = "NON"
	}

	var (
		acked, received   seqSet
		reqLat, e2eLat    latencyHist
		dups              atomic.Uint64
		lastRecv, lastAck atomic.Int64 // run clock
		sent, errs, tmos  atomic.Uint64
		codes             [256]atomic.Uint64
		next              atomic.Uint64
		loadStart, loadAt time.Duration
	)
	if o.topic != "" {
		r.Target += " -> " + o.mqtt + " " + o.topic
		sub, err := benchMQTT(o.mqtt, "bridge-bench-"+mk.run, o.timeout)
		if err != nil {
			return nil, err
		}
		defer sub.Disconnect(100)
		err = benchSubscribe(sub, o.topic, o.qos, o.timeout, func(_ string, p []byte) {
			seq, at, ok := mk.Decode(p)
			if !ok {
				return
			}
			now := mk.now()
			if !received.Add(seq) {
				dups.Add(1)
				return
			}
			e2eLat.Record(now - at)
			storeMax(&lastRecv, now)
		})
		if err != nil {
			return nil, err
		}
	}

	// RFC 7252 §4.7 lets a client that knows the server raise NSTART: each
	// worker has one request outstanding, as -w promises.
	client, err := coapside.NewClient(coapside.ClientOptions{Timeout: o.timeout,
		EndpointOptions: coapside.EndpointOptions{NStart: o.workers, MaxQueuePerPeer: o.workers}})
	if err != nil {
		return nil, err
	}
	defer client.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loadStart = mk.now()
	end := loadStart + o.duration
	watch.Start(ctx)
	var wg sync.WaitGroup
	for range o.workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				seq := next.Add(1) - 1
				due, ok := pace(ctx, mk, seq, o.rate, loadStart, end)
				if !ok {
					return
				}
				t := targets[seq%uint64(len(targets))]
				req := &coapside.Request{Method: method, Type: message.Confirmable, Options: slices.Clone(t.opts),
					Payload: mk.Encode(seq, due, o.size), URL: t.url, Peer: t.addr}
				if o.non {
					req.Type = message.NonConfirmable
				}
				sent.Add(1)
				rctx, rcancel := context.WithTimeout(ctx, o.timeout)
				resp, err := client.Do(rctx, req)
				rcancel()
				switch {
				case err == nil:
					codes[resp.Code].Add(1)
					if resp.Code.IsSuccess() {
						now := mk.now()
						reqLat.Record(now - due)
						acked.Add(seq)
						storeMax(&lastAck, now)
					} else {
						errs.Add(1)
					}
				case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, coapside.ErrTimeout):
					tmos.Add(1)
				case ctx.Err() != nil:
					// interrupted: neither sent nor lost
				default:
					errs.Add(1)
				}
			}
		})
	}
	wg.Wait()
	loadAt = mk.now()
	r.Processes = watch.Stop(acked.Len())
	if o.topic != "" {
		waitCount(ctx, o.drain, acked.Len(), received.Len)
	}

	elapsed := loadAt - loadStart
	r.Seconds = elapsed.Seconds()
	r.Sent, r.Acked, r.Errors, r.Timeouts = sent.Load(), acked.Len(), errs.Load(), tmos.Load()
	r.Codes = map[string]uint64{}
	for c := range codes {
		if n := codes[c].Load(); n > 0 {
			r.Codes[message.Code(c).Dotted()] = n
		}
	}
	// Rates are over the time to the last answer or delivery, so a
	// request still retransmitting at the end does not stretch them.
	r.Request = reqLat.summary(time.Duration(lastAck.Load()) - loadStart)
	if o.topic != "" {
		r.Received, r.Duplicates = received.Len(), dups.Load()
		r.Lost = acked.Missing(&received)
		r.EndToEnd = e2eLat.summary(time.Duration(lastRecv.Load()) - loadStart)
	}
	return r, nil
}
