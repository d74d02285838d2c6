package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coap-mqtt/bridge/bridge"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/spf13/cobra"
)

// newSimCmd builds "bridge sim", a thin wrapper around simFleet.
func newSimCmd(_, stderr io.Writer) *cobra.Command {
	var (
		o         simOptions
		format    string
		pskKey    string
		seed      int64
		logLevel  string
		logFormat string
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run a fleet of simulated CoAP sensor devices",
		Long: `Run N simulated CoAP devices for demos, tests and load. Device i is named
sim-i and listens on its own UDP port, --base-port + i, on --listen-host
(sim-0 on 5690, sim-1 on 5691, ... by default). With --psk-key every device
also listens for coaps:// (DTLS PSK) on --dtls-base-port + i (by default the
ports right after the plain ones: base-port + devices + i), accepting the
identity --psk-identity-prefix + i ("sim-0", "sim-1", ... by default).

Every device serves:
  /sensors/temp      observable temperature (Cel), rt=temperature
  /sensors/humidity  observable relative humidity (%RH), rt=humidity
  /battery           pollable battery level (%EL), slowly draining, rt=battery
  /actuators/led     observable LED state; PUT on|off answers 2.04, anything
                     else 4.00 with a diagnostic; rt=led, if=actuator
  /.well-known/core  discovery with rt, if, ct and obs attributes

Readings drift slowly around a per-device set point with a little noise and
change every --interval, when observers are notified; responses carry a
Max-Age of two intervals, so observers notice a silent device quickly.
--format picks text (plain numbers), json, cbor or senml (senml+json);
--seed makes the data reproducible (0 picks a seed from the clock, which is
logged).

Reboots, for demos of re-observation: --reboot-every D reboots all devices
periodically, and SIGUSR1 reboots them at once. A reboot drops every
observer, restarts the Observe sequence numbers from a low value (they
count sensor updates since the boot, as on a device without a clock) and
the listeners (same ports), and switches the LED off.

Devices in the field push, often from behind NAT, and sleep. With
--push URL every device POSTs its three readings (metrics temp, humidity
and battery, in --format) to URL, {device} and {metric} filled in, for
example coap://127.0.0.1:5683/telemetry/{device}/{metric}: first at once,
then every --interval. It pushes from the one UDP socket it serves its
resources on, so a NAT binding opened by a push lets the bridge's answers
and commands back in (the bridge learns the device where it spoke from).
--sleep PERIOD adds a duty cycle: the device wakes every PERIOD, pushes,
listens for --awake (5s by default, the bridge's devices.awake default),
then closes its socket: until its next wake nothing reaches it, as on a
node whose radio is off. Every PUT it carries out is logged ("sim
command"). A coaps:// URL needs --psk-key: the device's one socket is then
a DTLS client with identity --psk-identity-prefix + i, it serves the
bridge's requests on the session its push opened, has no coaps listener,
and handshakes again after each sleep, resuming its session (kept in
memory). --name-prefix names the devices,
so that several sim processes can feed one bridge.

SIGINT or SIGTERM stops the fleet and exits 0. Exit code 2 means bad flags,
1 that a listener could not be opened (for example a port in use).`,
		Example: `  bridge sim --devices 3 --base-port 5690 --interval 2s
  bridge sim --devices 10 --format senml --reboot-every 2m
  bridge sim --psk-key hex:00112233445566778899aabbccddeeff
  bridge sim --devices 1 --name-prefix sleepy- --base-port 5700 \
    --push 'coap://127.0.0.1:5683/telemetry/{device}/{metric}' --sleep 30s --awake 5s`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError(stderr, "sim takes no arguments, got %q", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			level, err := bridge.ParseLevel(logLevel)
			if err != nil {
				return usageError(stderr, "--log-level: %v", err)
			}
			hopts := &slog.HandlerOptions{Level: level}
			switch logFormat {
			case "text":
				o.Logger = slog.New(slog.NewTextHandler(stderr, hopts))
			case "json":
				o.Logger = slog.New(slog.NewJSONHandler(stderr, hopts))
			default:
				return usageError(stderr, "--log-format: want text or json, got %q", logFormat)
			}
			if o.Format, err = parseSimFormat(format); err != nil {
				return usageError(stderr, "--format: %v", err)
			}
			if pskKey != "" {
				if o.PSK, err = keys.ParseKey(pskKey); err != nil {
					return usageError(stderr, "--psk-key: %v", err)
				}
			}
			if cmd.Flags().Changed("awake") && o.Sleep == 0 {
				return usageError(stderr, "--awake needs --sleep")
			}
			if seed == 0 {
				seed = time.Now().UnixNano()
			}
			o.Seed = uint64(seed)
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return runSim(ctx, o, stderr)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(stderr, "%v", err) })
	fl := cmd.Flags()
	fl.IntVarP(&o.Devices, "devices", "n", 3, "number of devices")
	fl.StringVar(&o.ListenHost, "listen-host", "127.0.0.1", "IP address the devices listen on")
	fl.IntVar(&o.BasePort, "base-port", 5690, "UDP port of sim-0; device i uses base-port+i (0: free ports)")
	fl.IntVar(&o.DTLSBasePort, "dtls-base-port", 0, "coaps port of sim-0 with --psk-key (0: base-port+devices)")
	fl.StringVar(&pskKey, "psk-key", "", "enable coaps with this pre-shared key (hex:..., base64:... or plain)")
	fl.StringVar(&o.PSKIdentityPrefix, "psk-identity-prefix", "sim-", "PSK identity of device i is this prefix followed by i")
	fl.DurationVar(&o.Interval, "interval", 5*time.Second, "time between sensor updates and notifications")
	fl.StringVar(&format, "format", "text", "sensor payload format: text, json, cbor or senml")
	fl.Int64Var(&seed, "seed", 0, "random seed for reproducible data (0: from the clock)")
	fl.DurationVar(&o.RebootEvery, "reboot-every", 0, "reboot every device this often (0: never; SIGUSR1 reboots at once)")
	fl.StringVar(&o.NamePrefix, "name-prefix", "sim-", "device i is named this prefix followed by i")
	fl.StringVar(&o.Push, "push", "", "POST readings to this coap:// or coaps:// URL template ({device}, {metric}) instead of waiting to be observed")
	fl.DurationVar(&o.Sleep, "sleep", 0, "with --push: wake every PERIOD, push, listen for --awake, then stop receiving (0: always awake)")
	fl.DurationVar(&o.Awake, "awake", 5*time.Second, "with --sleep: how long a device listens after each wake's push")
	fl.StringVar(&logLevel, "log-level", "info", "debug|info|warn|error")
	fl.StringVar(&logFormat, "log-format", "text", "text|json")
	return cmd
}

// runSim runs a fleet until ctx ends or SIGINT/SIGTERM arrives; SIGUSR1
// reboots every device.
func runSim(ctx context.Context, o simOptions, stderr io.Writer) error {
	f, err := newSimFleet(o)
	if err != nil {
		return usageError(stderr, "%v", err)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Installed before Start reports the fleet running, so a SIGUSR1 sent
	// on that log line never meets the default action (termination).
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	if err := f.Start(ctx); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return exitError{1}
	}
	for {
		select {
		case <-ctx.Done():
			f.Close()
			return nil
		case <-usr1:
			f.opts.Logger.Info("SIGUSR1: rebooting devices")
			f.RebootAll()
		}
	}
}
