package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/cobra"
)

// maxBenchDuration bounds one benchmark's load phase.
const maxBenchDuration = 10 * time.Minute

// exitLoss is the exit code of a benchmark that lost more than --max-loss.
const exitLoss = 1

// benchFlags are the flags every "bridge bench" mode shares.
type benchFlags struct {
	mqtt     string
	topic    string
	qos      int
	workers  int
	devices  int
	duration time.Duration
	drain    time.Duration
	timeout  time.Duration
	rate     float64
	size     int
	non      bool
	pids     []string
	json     bool
	maxLoss  float64
	rules    bool
}

// benchReport is the outcome of one benchmark run (--json prints it).
type benchReport struct {
	Mode     string  `json:"mode"`
	Target   string  `json:"target"`
	Workers  int     `json:"workers"`
	Devices  int     `json:"devices,omitempty"`
	Type     string  `json:"type,omitempty"` // CON or NON
	QoS      int     `json:"qos"`
	Size     int     `json:"payload_bytes"`
	RateGoal float64 `json:"rate_goal,omitempty"` // --rate, 0 for a closed loop
	Seconds  float64 `json:"elapsed_s"`           // load phase
	Sent     uint64  `json:"sent"`
	Acked    uint64  `json:"acked"` // CoAP 2.xx / delivered to a device / published
	Errors   uint64  `json:"errors"`
	Timeouts uint64  `json:"timeouts"`
	// Codes counts the responses by code ("2.04", "5.03", ...).
	Codes map[string]uint64 `json:"codes,omitempty"`
	// Request is request → response (CoAP) or publish → device handled.
	Request *benchLatency `json:"request,omitempty"`
	// EndToEnd is send → MQTT message received.
	EndToEnd   *benchLatency `json:"end_to_end,omitempty"`
	Received   uint64        `json:"received"`   // distinct messages of this run seen on MQTT
	Duplicates uint64        `json:"duplicates"` // extra copies of those
	Lost       uint64        `json:"lost"`       // acked but never received
	// Superseded counts observe notifications a device replaced with a
	// newer one before sending (RFC 7641 §4.5).
	Superseded uint64      `json:"superseded,omitempty"`
	LossPct    float64     `json:"loss_percent"`
	Processes  []procUsage `json:"processes,omitempty"`

	// Observations is devices x paths of "bench observe";
	// EstablishedSeconds is how long the bridge took to observe all of
	// them, from when the devices were up; ObservationsMissed is how many
	// missed at least one notification (lost or superseded).
	Observations       int     `json:"observations,omitempty"`
	EstablishedSeconds float64 `json:"established_s,omitempty"`
	ObservationsMissed int     `json:"observations_missed,omitempty"`
}

// benchLatency is a rate and latency distribution in milliseconds.
type benchLatency struct {
	Count  uint64  `json:"count"`
	Rate   float64 `json:"rate_per_s"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
}

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench ingress|commands|observe",
		Short: "Measure a running bridge: rate, latency, loss, CPU and memory",
		Long: `Load a running bridge through its CoAP side and its MQTT broker, as
redis-benchmark loads Redis, and report the rate, p50/p99/max latency and
loss of each path, and the CPU and resident memory of local processes
(--pid, for example the bridge and its broker).

  ingress   CoAP POSTs from -w workers -> bridge -> MQTT subscriber
  commands  MQTT publishes -> bridge -> in-process CoAP devices -> results
  observe   in-process CoAP devices notify -> bridge observes -> MQTT

Every payload carries "bench <run> <seq> <time>", so latency is measured
end to end in this process and messages of other runs are ignored. Loss
is what was acknowledged but never arrived after --drain. --rules prints
rules matching the flags for the bridge's rule directory and exits.

The load phase lasts -d (at most 10m); every wait after it is bounded by
--timeout and --drain. Exit codes: 0 ok, 1 loss above --max-loss (percent)
or a run that could not start, 2 usage error.`,
		Args: noArgs(stderr),
		RunE: func(*cobra.Command, []string) error {
			return usageError(stderr, "bench needs a mode: ingress, commands or observe")
		},
	}
	cmd.AddCommand(newBenchIngressCmd(stdout, stderr), newBenchCommandsCmd(stdout, stderr), newBenchObserveCmd(stdout, stderr))
	return cmd
}

// addBenchFlags registers the shared flags with mode-specific defaults.
func addBenchFlags(cmd *cobra.Command, f *benchFlags, topic string, stderr io.Writer) {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(stderr, "%v", err) })
	fl := cmd.Flags()
	fl.StringVar(&f.mqtt, "mqtt", "tcp://127.0.0.1:1883", "broker the bridge publishes to (tcp://host:port)")
	fl.StringVar(&f.topic, "topic", topic, "MQTT topic filter ({n}: device index where it names one topic)")
	fl.IntVar(&f.qos, "qos", 0, "QoS of the benchmark's MQTT subscription and publishes (0, 1 or 2)")
	fl.IntVarP(&f.workers, "workers", "w", 64, "requests or commands in flight (closed loop; -c is the global --config)")
	fl.IntVar(&f.devices, "devices", 0, "device count: {n} runs over 0..devices-1 (0: one per worker)")
	fl.DurationVarP(&f.duration, "duration", "d", 10*time.Second, "length of the load phase (at most 10m)")
	fl.DurationVar(&f.drain, "drain", 3*time.Second, "how long to wait for messages still in flight after the load phase")
	fl.DurationVar(&f.timeout, "timeout", 5*time.Second, "give up on one request or command after this long")
	fl.Float64Var(&f.rate, "rate", 0, "total messages per second, paced (0: closed loop, as fast as answers come)")
	fl.IntVar(&f.size, "size", 64, "payload size in bytes (at least the marker, about 30)")
	fl.StringSliceVar(&f.pids, "pid", nil, "report CPU and RSS of this local process (repeatable; \"auto\": the owner of the target's UDP port)")
	fl.BoolVar(&f.json, "json", false, "print the report as one JSON object")
	fl.Float64Var(&f.maxLoss, "max-loss", 0, "exit 1 when more than this percentage of acknowledged messages is lost")
	fl.BoolVar(&f.rules, "rules", false, "print bridge rules matching these flags and exit")
}

// validate checks the shared flags; it returns a usage error.
func (f *benchFlags) validate() error {
	switch {
	case f.workers < 1:
		return errors.New("-w must be at least 1")
	case f.duration <= 0 || f.duration > maxBenchDuration:
		return fmt.Errorf("-d must be in (0, %v]", maxBenchDuration)
	case f.drain < 0 || f.drain > time.Minute:
		return errors.New("--drain must be in [0, 1m]")
	case f.timeout <= 0 || f.timeout > time.Minute:
		return errors.New("--timeout must be in (0, 1m]")
	case f.rate < 0:
		return errors.New("--rate must not be negative")
	case f.size < 0 || f.size > 65000:
		return errors.New("--size must be in [0, 65000]")
	case f.qos < 0 || f.qos > 2:
		return errors.New("--qos must be 0, 1 or 2")
	case f.devices < 0:
		return errors.New("--devices must not be negative")
	case f.maxLoss < 0:
		return errors.New("--max-loss must not be negative")
	}
	if f.devices == 0 {
		f.devices = f.workers
	}
	if f.topic != "" {
		if _, err := mqttBroker(f.mqtt); err != nil {
			return err
		}
	}
	return nil
}

// mqttBroker checks a broker URL for the MQTT client.
func mqttBroker(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--mqtt: %w", err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ws", "ssl", "tls", "wss":
	default:
		return nil, fmt.Errorf("--mqtt: want tcp://host:port, got %q", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("--mqtt: no host in %q", s)
	}
	return u, nil
}

// resolvePIDs turns --pid values into pids; "auto" is the owner of the
// local UDP port autoPort (0: no port to look at).
func resolvePIDs(vals []string, autoPort int) ([]int, error) {
	var pids []int
	for _, v := range vals {
		if v == "auto" {
			if autoPort == 0 {
				return nil, errors.New("--pid auto needs a local coap:// target with a port")
			}
			pid, err := findUDPOwner(autoPort)
			if err != nil {
				return nil, fmt.Errorf("--pid auto: %w", err)
			}
			pids = append(pids, pid)
			continue
		}
		pid, err := strconv.Atoi(v)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("--pid: want a process id or auto, got %q", v)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// runBench runs one benchmark until its end or an interrupt and writes its
// report: exit code 2 for a usage error found while running, 1 for a
// failure (or, from finish, too much loss).
func runBench(cmd *cobra.Command, f *benchFlags, run func(context.Context) (*benchReport, error), stdout, stderr io.Writer) error {
	ctx, stop := benchContext(cmd)
	defer stop()
	r, err := run(ctx)
	if err != nil {
		if errors.Is(err, errUsage) {
			return usageError(stderr, "%s", strings.TrimPrefix(err.Error(), "usage: "))
		}
		fmt.Fprintln(stderr, "error:", err)
		return exitError{1}
	}
	return r.finish(f, stdout, stderr)
}

// benchContext ends on SIGINT/SIGTERM, so an interrupted run still reports.
func benchContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
}

// benchMQTT connects a client for a benchmark run; it never reconnects,
// so a broker that goes away shows up as loss rather than being hidden.
func benchMQTT(broker, id string, timeout time.Duration) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(false).
		SetConnectTimeout(timeout).SetWriteTimeout(timeout).SetMaxResumePubInFlight(0)
	c := mqtt.NewClient(o)
	t := c.Connect()
	if !t.WaitTimeout(timeout) {
		c.Disconnect(0)
		return nil, fmt.Errorf("mqtt connect %s: timeout", broker)
	}
	if err := t.Error(); err != nil {
		return nil, fmt.Errorf("mqtt connect %s: %w", broker, err)
	}
	return c, nil
}

// benchSubscribe subscribes c to filter and calls fn with each payload.
func benchSubscribe(c mqtt.Client, filter string, qos int, timeout time.Duration, fn func(topic string, payload []byte)) error {
	t := c.Subscribe(filter, byte(qos), func(_ mqtt.Client, m mqtt.Message) { fn(m.Topic(), m.Payload()) })
	if !t.WaitTimeout(timeout) {
		return fmt.Errorf("mqtt subscribe %s: timeout", filter)
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("mqtt subscribe %s: %w", filter, err)
	}
	return nil
}

// waitCount polls n every 10 ms until it reaches want, ctx ends or d
// passes.
func waitCount(ctx context.Context, d time.Duration, want uint64, n func() uint64) {
	waitCountEvery(ctx, d, 10*time.Millisecond, want, n)
}

// waitCountEvery is waitCount polling every period.
func waitCountEvery(ctx context.Context, d, period time.Duration, want uint64, n func() uint64) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(period)
	defer tick.Stop()
	for n() < want {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}

// finish computes loss and prints the report; it returns an exitError
// when the loss is above the limit or nothing succeeded.
func (r *benchReport) finish(f *benchFlags, stdout, stderr io.Writer) error {
	if r.Acked > 0 {
		r.LossPct = float64(r.Lost) / float64(r.Acked) * 100
	}
	if f.json {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
	} else {
		r.writeText(stdout)
	}
	if r.LossPct > f.maxLoss {
		fmt.Fprintf(stderr, "error: lost %d of %d (%.3f %%), more than --max-loss %g %%\n", r.Lost, r.Acked, r.LossPct, f.maxLoss)
		return exitError{exitLoss}
	}
	if r.Sent > 0 && r.Acked == 0 {
		// Nothing got through: a run that measured nothing is no success.
		fmt.Fprintf(stderr, "error: none of %d requests succeeded (%d errors, %d timeouts)\n", r.Sent, r.Errors, r.Timeouts)
		return exitError{exitLoss}
	}
	return nil
}

// writeText prints the report as aligned tables.
func (r *benchReport) writeText(w io.Writer) {
	pacing := "closed loop"
	if r.RateGoal > 0 {
		pacing = fmt.Sprintf("paced at %g/s", r.RateGoal)
	}
	fmt.Fprintf(w, "bench %s: %s\n", r.Mode, r.Target)
	kind := ""
	if r.Type != "" {
		kind = r.Type + ", "
	}
	fmt.Fprintf(w, "%d workers, %d devices, %sQoS %d, %d B, %.1f s, %s\n", r.Workers, r.Devices, kind, r.QoS, r.Size, r.Seconds, pacing)
	if r.Observations > 0 {
		fmt.Fprintf(w, "%d observations, all established after %.1f s\n", r.Observations, r.EstablishedSeconds)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tcount\trate/s\tp50 ms\tp99 ms\tmax ms\tmean ms\t")
	row := func(name string, l *benchLatency) {
		if l != nil {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t\n", name, l.Count, l.Rate, l.P50Ms, l.P99Ms, l.MaxMs, l.MeanMs)
		}
	}
	row(r.requestLabel(), r.Request)
	row("end to end", r.EndToEnd)
	_ = tw.Flush()
	fmt.Fprintf(w, "sent %d  acked %d  errors %d  timeouts %d  received %d  duplicates %d  lost %d (%.3f %%)\n",
		r.Sent, r.Acked, r.Errors, r.Timeouts, r.Received, r.Duplicates, r.Lost, r.LossPct)
	if r.Superseded > 0 {
		fmt.Fprintf(w, "superseded at the devices %d\n", r.Superseded)
	}
	if r.ObservationsMissed > 0 {
		fmt.Fprintf(w, "observations that missed a notification %d of %d\n", r.ObservationsMissed, r.Observations)
	}
	if len(r.Codes) > 0 {
		var parts []string
		for k, v := range r.Codes {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
		slices.Sort(parts)
		fmt.Fprintf(w, "codes %s\n", strings.Join(parts, " "))
	}
	if len(r.Processes) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "process\tpid\tcpu %\tcpu µs/msg\trss start MB\trss max MB\trss end MB\tpeak (VmHWM) MB\t")
		for _, p := range r.Processes {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", p.Name, p.PID, p.CPUPercent, p.CPUMicrosPerMsg, p.RSSStartMB, p.RSSMaxMB, p.RSSEndMB, p.RSSPeakMB)
		}
		_ = tw.Flush()
	}
}

func (r *benchReport) requestLabel() string {
	switch r.Mode {
	case "commands":
		return "to device"
	case "observe":
		return "notified"
	}
	return "coap"
}
