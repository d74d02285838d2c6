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
	ready  time.Duration
	paths  int
	maxAge time.Duration
}

// maxBenchPaths bounds --paths.
const maxBenchPaths = 1000

func newBenchObserveCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &benchObserve{}
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "In-process CoAP devices notify; the bridge observes them and publishes",
		Long: `Run --devices CoAP devices in this process (device i named --name-prefix + i
on --listen-host:--base-port+i), each with --paths observable resources
(/bench, or /bench/0 .. /bench/N-1 for --paths N) answered with Max-Age
--max-age, wait up to --ready until the bridge observes every one of them
(devices x paths observations), then change their representations at
--rate in total (round robin over the observations) and
subscribe to --topic to see the bridge's publishes.

An observation the bridge held on devices of an earlier run on the same
ports is renewed only after that run's Max-Age and the bridge's margin:
use a short --max-age, or restart the bridge, between runs.

Reports the end-to-end rate and notification -> MQTT latency, and loss:
notifications the devices sent that never arrived within --drain, and how
many observations missed at least one. RFC
7641 §4.5 lets a device skip a representation that a newer one replaced
while its observer was slow (a confirmable notification not yet
acknowledged): those are reported as "superseded", not as loss. The
bridge needs the devices and an observe rule; --rules prints them.`,
		Example: `  bridge bench observe --devices 16 --rules > rules/bench-observe.toml
  bridge bench observe --devices 16 --rate 2000 -d 10s
  bridge bench observe --devices 10000 --paths 10 --base-port 20000 --rules > rules/obs.toml
  bridge bench observe --devices 10000 --paths 10 --base-port 20000 --rate 10000 -d 20s --ready 5m`,
		Args: noArgs(stderr),
		RunE: func(cmd *cobra.Command, _ []string) error {

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
			if o.paths < 1 || o.paths > maxBenchPaths {
				return usageError(stderr, "--paths must be in [1, %d]", maxBenchPaths)
			}
			if o.maxAge < time.Second || o.maxAge > 24*time.Hour || o.maxAge%time.Second != 0 {
				return usageError(stderr, "--max-age must be whole seconds in [1s, 24h]")
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
	// Devices notify at a rate: no closed loop here. The shared flags'
	// defaults and help say otherwise, so they are set for this mode.
	o.rate, o.devices = 1000, 16
	rate, devices := cmd.Flags().Lookup("rate"), cmd.Flags().Lookup("devices")
	rate.DefValue, rate.Usage = "1000", "notifications per second in total, paced (round robin over the observations)"
	devices.DefValue, devices.Usage = "16", "device count"
	cmd.Flags().DurationVar(&o.ready, "ready", 60*time.Second, "how long to wait for the bridge to observe every device's paths")
	cmd.Flags().IntVar(&o.paths, "paths", 1, "observable resources per device: /bench, or /bench/0 .. /bench/N-1")
	cmd.Flags().DurationVar(&o.maxAge, "max-age", benchMaxAge, "Max-Age of the devices' representations (whole seconds)")
	return cmd
}

func (o *benchObserve) rulesText() string {
	topic := strings.Replace(o.topic, "+", "{device}", 1)
	devs := make([]string, o.devices)
	for i := range devs {
		devs[i] = fmt.Sprintf("%q", fmt.Sprintf("%s%d", o.prefix, i))
	}
	paths := o.pathList()
	for i, p := range paths {
		paths[i] = fmt.Sprintf("%q", p)
	}
	return deviceRules(o.prefix, o.host, o.basePort, o.devices) + fmt.Sprintf(`# Rules for "bridge bench observe": every notification is published.
[[observe]]
name    = "bench-observe"
devices = [%s]
paths   = [%s]
topic   = %q
qos     = %d
`, strings.Join(devs, ", "), strings.Join(paths, ", "), topic, o.qos)
}

// pathList is every device's observable paths.
func (o *benchObserve) pathList() []string {
	if o.paths == 1 {
		return []string{"/bench"}
	}
	paths := make([]string, o.paths)
	for i := range paths {
		paths[i] = fmt.Sprintf("/bench/%d", i)
	}
	return paths
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
	nobs := o.devices * o.paths
	r := &benchReport{Mode: "observe", Target: fmt.Sprintf("%d devices x %d paths -> %s %s", o.devices, o.paths, o.mqtt, o.topic),
		Workers: 1, Devices: o.devices, Observations: nobs, QoS: o.qos, Size: o.size, RateGoal: o.rate}
	var (
		sent, received seqSet
		e2eLat         latencyHist
		dups           atomic.Uint64
		lastRecv       atomic.Int64
		unobserved     uint64
	)
	fleet, err := newBenchFleet(benchFleetOptions{Count: o.devices, Host: o.host, BasePort: o.basePort, Prefix: o.prefix,
		Paths: o.pathList(), MaxAge: o.maxAge})
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
	readyStart := mk.now()
	// Counting visits every observable resource: with many, poll less
	// often so that the count does not take the devices' CPU.
	period := time.Duration(max(10, nobs/1000)) * time.Millisecond
	waitCountEvery(ctx, o.ready, period, uint64(nobs), func() uint64 { return uint64(fleet.Observed()) })
	if n := fleet.Observed(); n < nobs {
		return nil, fmt.Errorf("the bridge observes %d of %d resources (%d devices x %d paths) after %v: check its rules (bridge bench observe --rules)",
			n, nobs, o.devices, o.paths, o.ready)
	}
	r.EstablishedSeconds = (mk.now() - readyStart).Seconds()

	loadStart := mk.now()
	end := loadStart + o.duration
	watch.Start(ctx)
	for seq := uint64(0); ; seq++ {
		due, ok := pace(ctx, mk, seq, o.rate, loadStart, end)
		if !ok {
			break
		}
		// Consecutive notifications go to different devices; every
		// observation gets one in each round of nobs.
		k := int(seq % uint64(nobs))
		if fleet.Notify(k%o.devices, k/o.devices, mk.Encode(seq, due, o.size)) > 0 {
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
	missed := make(map[uint64]struct{})
	sent.EachMissing(&received, func(seq uint64) { missed[seq%uint64(nobs)] = struct{}{} })
	r.ObservationsMissed = len(missed)
	return r, nil
}
