package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/cobra"
)

// benchFleetFlags are the flags of the in-process devices.
type benchFleetFlags struct {
	host     string
	basePort int
	prefix   string
}

func addFleetFlags(cmd *cobra.Command, o *benchFleetFlags, basePort int, prefix string) {
	fl := cmd.Flags()
	fl.StringVar(&o.host, "listen-host", "127.0.0.1", "IP address the in-process devices listen on")
	fl.IntVar(&o.basePort, "base-port", basePort, "UDP port of device 0; device i uses base-port+i, as in the rules --rules prints")
	fl.StringVar(&o.prefix, "name-prefix", prefix, "device i is named this prefix followed by i")
}

// benchCommands holds the "bench commands" flags.
type benchCommands struct {
	benchFlags
	benchFleetFlags
	results string
}

func newBenchCommandsCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &benchCommands{}
	cmd := &cobra.Command{
		Use:   "commands",
		Short: "MQTT commands through the bridge to in-process CoAP devices",
		Long: `Run --devices CoAP devices in this process (device i named --name-prefix + i
on --listen-host:--base-port+i), publish commands to --topic ({n}: the
device index) from -w workers, each waiting for its command's result
(closed loop) or paced at --rate, and subscribe to the results on
--results. A device answers a PUT or POST with 2.04 and the payload it
got, so the bridge's result carries the command's marker back.

Reports the rate and publish -> device latency ("to device"), the rate and
publish -> result latency ("end to end"), results by status, and loss:
commands the broker accepted whose result never arrived within --drain.
The bridge needs the devices and a command rule; --rules prints them.`,
		Example: `  bridge bench commands --devices 16 --rules > rules/bench-commands.toml
  bridge bench commands --devices 16 -w 16 -d 10s --pid 1234`,
		Args: noArgs(stderr),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return usageError(stderr, "%v", err)
			}
			if o.basePort < 0 || o.basePort+o.devices > 65535 {
				return usageError(stderr, "--base-port: ports %d..%d out of range", o.basePort, o.basePort+o.devices-1)
			}
			if !strings.Contains(o.topic, "{n}") {
				return usageError(stderr, "--topic must contain {n}, the device index")
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
	addBenchFlags(cmd, &o.benchFlags, "bench-cmd/bench-{n}/led", stderr)
	addFleetFlags(cmd, &o.benchFleetFlags, 5790, "bench-")
	cmd.Flags().StringVar(&o.results, "results", "bench-replies/#", "MQTT filter of the bridge's command results")
	return cmd
}

// rulesText is the devices and a command rule for the default topics:
// the --topic segment with {n} is the device, the rest the resource.
func (o *benchCommands) rulesText() string {
	segs := strings.Split(o.topic, "/")
	filter := o.topic
	for i, s := range segs {
		if strings.Contains(s, "{n}") {
			filter = strings.Join(append(segs[:i:i], "{device}", "{resource...}"), "/")
			break
		}
	}
	resp := "bench-replies/{device}/{resource...}"
	if r := strings.TrimSuffix(o.results, "/#"); r != o.results {
		resp = r + "/{device}/{resource...}"
	}
	return deviceRules(o.prefix, o.host, o.basePort, o.devices) + fmt.Sprintf(`# Rules for "bridge bench commands": a publish to %s is a PUT on the device.
[[command]]
name           = "bench-commands"
filter         = %q
method         = "PUT"
url            = "coap://{device}/{resource...}"
response_topic = %q
timeout        = %q
`, o.topic, filter, resp, o.timeout.String())
}

// commandResultView is the part of a command result the benchmark reads.
type commandResultView struct {
	Status  string          `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

func (o *benchCommands) run(ctx context.Context) (*benchReport, error) {
	pids, err := resolvePIDs(o.pids, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	watch, err := newProcWatch(pids)
	if err != nil {
		return nil, err
	}
	mk := newBenchMarker()
	r := &benchReport{Mode: "commands", Target: o.mqtt + " " + o.topic + " -> " + o.results,
		Workers: o.workers, Devices: o.devices, QoS: o.qos, Size: o.size, RateGoal: o.rate}

	var (
		handled, results, accepted seqSet
		devLat, e2eLat             latencyHist
		dups                       atomic.Uint64
		lastDev, lastRes           atomic.Int64
		sent, errs, tmos           atomic.Uint64
		next                       atomic.Uint64
		statusMu                   sync.Mutex
		status                     = map[string]uint64{}
		waitMu                     sync.Mutex
		waiting                    = map[uint64]chan struct{}{}
	)
	fleet, err := newBenchFleet(benchFleetOptions{Count: o.devices, Host: o.host, BasePort: o.basePort, Prefix: o.prefix, Paths: []string{"/bench"},
		Handled: func(_ int, p []byte) {
			seq, at, ok := mk.Decode(p)
			if !ok || !handled.Add(seq) {
				return // a retransmitted or repeated command is measured once
			}
			now := mk.now()
			devLat.Record(now - at)
			storeMax(&lastDev, now)
		}})
	if err != nil {
		return nil, err
	}
	defer fleet.Close()

	sub, err := benchMQTT(o.mqtt, "bridge-bench-sub-"+mk.run, o.timeout)
	if err != nil {
		return nil, err
	}
	defer sub.Disconnect(100)
	err = benchSubscribe(sub, o.results, o.qos, o.timeout, func(_ string, p []byte) {
		st, marker, ok := mk.commandResult(p)
		if !ok {
			return // queued results and failures carry no payload of ours
		}
		seq, at, ok := mk.Decode(marker)
		if !ok {
			return
		}
		now := mk.now()
		if !results.Add(seq) {
			dups.Add(1)
			return
		}
		statusMu.Lock()
		status[st]++
		statusMu.Unlock()
		e2eLat.Record(now - at)
		storeMax(&lastRes, now)
		waitMu.Lock()
		if ch := waiting[seq]; ch != nil {
			close(ch)
			delete(waiting, seq)
		}
		waitMu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	pub, err := benchMQTT(o.mqtt, "bridge-bench-pub-"+mk.run, o.timeout)
	if err != nil {
		return nil, err
	}
	defer pub.Disconnect(100)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loadStart := mk.now()
	end := loadStart + o.duration
	watch.Start(ctx)
	var wg sync.WaitGroup
	for range o.workers {
		wg.Go(func() {
			wait := time.NewTimer(o.timeout)
			defer wait.Stop()
			for ctx.Err() == nil {
				seq := next.Add(1) - 1
				due, ok := pace(ctx, mk, seq, o.rate, loadStart, end)
				if !ok {
					return
				}
				topic := strings.ReplaceAll(o.topic, "{n}", strconv.FormatUint(seq%uint64(o.devices), 10))
				var done chan struct{}
				if o.rate == 0 {
					done = make(chan struct{})
					waitMu.Lock()
					waiting[seq] = done
					waitMu.Unlock()
				}
				sent.Add(1)
				if !publishWait(pub, topic, o.qos, mk.Encode(seq, due, o.size), o.timeout) {
					errs.Add(1)
					o.forget(&waitMu, waiting, seq)
					continue
				}
				accepted.Add(seq)
				if done == nil {
					continue
				}
				wait.Reset(o.timeout)
				select {
				case <-done:
				case <-wait.C:
					tmos.Add(1)
					o.forget(&waitMu, waiting, seq)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	loadAt := mk.now()
	r.Processes = watch.Stop(accepted.Len())
	waitCount(ctx, o.drain, accepted.Len(), results.Len)

	r.Seconds = (loadAt - loadStart).Seconds()
	r.Sent, r.Acked, r.Errors, r.Timeouts = sent.Load(), accepted.Len(), errs.Load(), tmos.Load()
	statusMu.Lock()
	r.Codes = status
	statusMu.Unlock()
	r.Request = devLat.summary(time.Duration(lastDev.Load()) - loadStart)
	r.EndToEnd = e2eLat.summary(time.Duration(lastRes.Load()) - loadStart)
	r.Received, r.Duplicates = results.Len(), dups.Load()
	r.Lost = accepted.Missing(&results)
	return r, nil
}

// commandResult returns the status of a command result (JSON) and the
// marker its payload carries back. The bridge writes results compact with
// the status first, and a marker (letters, digits, spaces, dots) needs no
// escaping in a JSON string, so both are found without decoding the
// result, which cost the load generator a sixth of its CPU; any other
// layout is decoded. ok is false for a result without a marker of this run.
func (m *benchMarker) commandResult(p []byte) (status string, marker []byte, ok bool) {
	if rest, found := bytes.CutPrefix(p, []byte(`{"status":"`)); found {
		if i := bytes.IndexByte(rest, '"'); i >= 0 {
			status = string(rest[:i])
			if j := bytes.Index(rest, m.payloadKey); j >= 0 {
				marker = rest[j+len(m.payloadKey)-len(m.pre):]
				if k := bytes.IndexByte(marker, '"'); k >= 0 {
					return status, marker[:k], true
				}
			}
		}
	}
	var res commandResultView
	if json.Unmarshal(p, &res) != nil {
		return "", nil, false
	}
	var text string
	if json.Unmarshal(res.Payload, &text) != nil {
		return "", nil, false
	}
	return res.Status, []byte(text), true
}

func (o *benchCommands) forget(mu *sync.Mutex, waiting map[uint64]chan struct{}, seq uint64) {
	mu.Lock()
	delete(waiting, seq)
	mu.Unlock()
}

// pace returns when message seq is due: now in a closed loop, or its slot
// at rate; ok is false past end or when ctx ends.
func pace(ctx context.Context, mk *benchMarker, seq uint64, rate float64, start, end time.Duration) (time.Duration, bool) {
	if rate <= 0 {
		now := mk.now()
		return now, now < end && ctx.Err() == nil
	}
	due := start + time.Duration(float64(seq)/rate*float64(time.Second))
	if due >= end || mk.now() >= end {
		// The schedule ends at -d; so does the load when the rate asked
		// for cannot be reached (its sends fall behind their due times).
		return 0, false
	}
	if wait := due - mk.now(); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return 0, false
		}
	}
	return due, true
}

// publishWait publishes and waits for the broker's acknowledgement (for
// QoS 0, for the write).
func publishWait(c mqtt.Client, topic string, qos int, payload []byte, timeout time.Duration) bool {
	t := c.Publish(topic, byte(qos), false, payload)
	return t.WaitTimeout(timeout) && t.Error() == nil
}
