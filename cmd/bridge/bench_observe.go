package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
)

// benchObserve holds the "bench observe" flags.
type benchObserve struct {
	benchFlags
	benchFleetFlags
	ready time.Duration
}

func newBenchObserveCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &benchObserve{}
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "In-process CoAP devices notify; the bridge observes them and publishes",
		Long: `Run --devices CoAP devices in this process (device i named --name-prefix + i
on --listen-host:--base-port+i), each with an observable /bench, wait up
to --ready until the bridge observes all of them, then change their
representations at --rate in total (round robin; 1000/s by default) and
subscribe to --topic to see the bridge's publishes.

Reports the end-to-end rate and notification -> MQTT latency, and loss:
notifications the devices sent that never arrived within --drain. RFC
7641 §4.5 lets a device skip a representation that a newer one replaced
while its observer was slow (a confirmable notification not yet
acknowledged): those are reported as "superseded", not as loss. The
bridge needs the devices and an observe rule; --rules prints them.`,
		Example: `  bridge bench observe --devices 16 --rules > rules/bench-observe.toml
  bridge bench observe --devices 16 --rate 2000 -d 10s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("rate") {
				o.rate = 1000
			}
			if !cmd.Flags().Changed("devices") {
				o.devices = 16
			}
			if err := o.validate(); err != nil {
				return usageError(stderr, "%v", err)
			}
			if o.rate <= 0 {
				return usageError(stderr, "--rate must be positive: devices notify at a rate")
			}
			if o.basePort < 0 || o.basePort+o.devices > 65535 {
				return usageError(stderr, "--base-port: ports %d..%d out of range", o.basePort, o.basePort+o.devices-1)
			}
			if o.topic == "" {
				return usageError(stderr, "--topic must not be empty")
			}
			if o.rules {
				if o.basePort == 0 {
					return usageError(stderr, "--rules needs --base-port")
				}
				fmt.Fprint(stdout, o.rulesText())
				return nil
			}
			return runBench(cmd, &o.benchFlags, o.run, stdout, stderr)
		},
	}
	addBenchFlags(cmd, &o.benchFlags, "bench-obs/+", stderr)
	addFleetFlags(cmd, &o.benchFleetFlags, 5890, "bench-obs-")
	cmd.Flags().DurationVar(&o.ready, "ready", 60*time.Second, "how long to wait for the bridge to observe every device")
	return cmd
}

func (o *benchObserve) rulesText() string {
	topic := strings.Replace(o.topic, "+", "{device}", 1)
	devs := make([]string, o.devices)
	for i := range devs {
		devs[i] = fmt.Sprintf("%q", fmt.Sprintf("%s%d", o.prefix, i))
	}
	return deviceRules(o.prefix, o.host, o.basePort, o.devices) + fmt.Sprintf(`# Rules for "bridge bench observe": every notification of /bench is published.
[[observe]]
name    = "bench-observe"
devices = [%s]
paths   = ["/bench"]
topic   = %q
qos     = %d
`, strings.Join(devs, ", "), topic, o.qos)
}

func (o *benchObserve) run(ctx context.Context) (*benchReport, error) {
	pids, err := resolvePIDs(o.pids, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	watch, err := newProcWatch(pids)
	if err != nil {
		return nil, err
	}
	mk := newBenchMarker()
	r := &benchReport{Mode: "observe", Target: fmt.Sprintf("%d devices -> %s %s", o.devices, o.mqtt, o.topic),
		Workers: 1, Devices: o.devices, QoS: o.qos, Size: o.size, RateGoal: o.rate}
	var (
		sent, received seqSet
		e2eLat         latencyHist
		dups           atomic.Uint64
		lastRecv       atomic.Int64
		unobserved     uint64
	)
	fleet, err := newBenchFleet(benchFleetOptions{Count: o.devices, Host: o.host, BasePort: o.basePort, Prefix: o.prefix, Path: "/bench"})
	if err != nil {
		return nil, err
	}
	defer fleet.Close()
	sub, err := benchMQTT(o.mqtt, "bridge-bench-"+mk.run, o.timeout)
	if err != nil {
		return nil, err
	}
	defer sub.Disconnect(100)
	err = benchSubscribe(sub, o.topic, o.qos, o.timeout, func(_ string, p []byte) {
		seq, at, ok := mk.Decode(p)
		if !ok {
			return // a representation from before the run (empty) or another run
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
	waitCount(ctx, o.ready, uint64(o.devices), func() uint64 { return uint64(fleet.Observed()) })
	if n := fleet.Observed(); n < o.devices {
		return nil, fmt.Errorf("the bridge observes %d of %d devices after %v: check its rules (bridge bench observe --rules)", n, o.devices, o.ready)
	}

	loadStart := mk.now()
	end := loadStart + o.duration
	watch.Start(ctx)
	for seq := uint64(0); ; seq++ {
		due, ok := pace(ctx, mk, seq, o.rate, loadStart, end)
		if !ok {
			break
		}
		if fleet.Notify(int(seq%uint64(o.devices)), mk.Encode(seq, due, o.size)) > 0 {
			sent.Add(seq)
		} else {
			unobserved++
		}
	}
	loadAt := mk.now()
	r.Processes = watch.Stop(sent.Len())
	waitCount(ctx, o.drain, sent.Len(), received.Len)

	r.Seconds = (loadAt - loadStart).Seconds()
	// A representation replaced before the device sent it never reached
	// the bridge: it is counted apart, not as the bridge's loss.
	r.Superseded = fleet.Superseded()
	r.Sent, r.Errors = sent.Len()+unobserved, unobserved
	r.Acked = sent.Len() - min(r.Superseded, sent.Len())
	r.EndToEnd = e2eLat.summary(time.Duration(lastRecv.Load()) - loadStart)
	r.Received, r.Duplicates = received.Len(), dups.Load()
	missing := sent.Missing(&received)
	r.Lost = missing - min(r.Superseded, missing)
	return r, nil
}
