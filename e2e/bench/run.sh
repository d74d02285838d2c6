#!/usr/bin/env bash
# Benchmark of the bridge's ingress path against bare CoAP servers, on
# loopback, written to e2e/bench/results.md.
#
# Builds the bridge, the bare coapside server and a go-coap v3 server (its
# own module, e2e/bench/gocoap), then measures with `bridge bench ingress`
# (CON PUTs from 64 workers, 64-byte payloads):
#
#   bridge + embedded broker, QoS 0 and QoS 1, end to end (CoAP -> MQTT sub)
#   bridge + embedded broker, no subscriber (CoAP side only)
#   bridge + mosquitto, QoS 0 and QoS 1, end to end
#   coapside bare server, libcoap coap-server-notls, go-coap v3 server
#
# The load generator is pinned to CPU 0 and the server (the bridge with its
# broker) to CPU 1 with taskset; every scenario runs REPS times in
# interleaved rounds and the table shows the median run, with ratios to
# the bare server and to libcoap from the same run of this script.
#
# Usage: e2e/bench/run.sh               about 4 minutes (DUR=8s, REPS=3)
#        QUICK=1 e2e/bench/run.sh       under 2 minutes (DUR=2s, REPS=3)
# Environment: DUR, REPS, WORKERS, BASE_PORT (UDP/TCP ports BASE_PORT..+5),
# OUT (default e2e/bench/results.md; the raw reports go next to it as
# results.tsv), NOTES (text added under the table).
# Needs go; libcoap's coap-server-notls and mosquitto are used when found
# (their rows are skipped otherwise); taskset when present.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
QUICK="${QUICK:-0}"
if [ "$QUICK" = 1 ]; then DUR="${DUR:-2s}"; else DUR="${DUR:-8s}"; fi
REPS="${REPS:-3}"
WORKERS="${WORKERS:-64}"
BASE_PORT="${BASE_PORT:-47310}"
OUT="${OUT:-$here/results.md}"

coap_port=$BASE_PORT
mqtt_port=$((BASE_PORT + 1))
http_port=$((BASE_PORT + 2))
mosq_port=$((BASE_PORT + 3))
srv_port=$((BASE_PORT + 4))

tmp="$(mktemp -d)"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

log "building into $tmp"
(cd "$root" && go build -o "$tmp/bridge" ./cmd/bridge && go build -o "$tmp/benchserver" ./coapside/internal/benchserver)
(cd "$here/gocoap" && go build -o "$tmp/gocoap" .)
bridge="$tmp/bridge"

# Pinning: the load generator on CPU 0, the server under test on CPU 1.
pin_load=() pin_srv=() pinning="load generator on CPU 0, server (bridge + its broker) on CPU 1 (taskset)"
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	pin_load=(taskset -c 0) pin_srv=(taskset -c 1)
else
	pinning="not pinned (taskset missing or fewer than 2 CPUs)"
	log "$pinning"
fi

for p in $coap_port $srv_port; do
	if ss -Hlun "sport = :$p" 2>/dev/null | grep -q .; then echo "UDP port $p in use; set BASE_PORT" >&2; exit 1; fi
done
for p in $mqtt_port $http_port $mosq_port; do
	if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then echo "TCP port $p in use; set BASE_PORT" >&2; exit 1; fi
done

# The bridge's config and rules: one ingress rule per QoS.
mkdir -p "$tmp/rules"
cat >"$tmp/rules/bench.toml" <<'EOF'
[[ingress]]
name    = "bench-q0"
path    = "/bench0/{device}"
methods = ["POST", "PUT"]
topic   = "bench0/{device}"
qos     = 0

[[ingress]]
name    = "bench-q1"
path    = "/bench1/{device}"
methods = ["POST", "PUT"]
topic   = "bench1/{device}"
qos     = 1
EOF
write_config() { # broker
	cat >"$tmp/config.toml" <<EOF
rules = ["$tmp/rules/*.toml"]
[coap]
listen = "127.0.0.1:$coap_port"
[mqtt]
broker = "$1"
client_id = "bench-bridge"
status_topic = "-"
[mqtt.embedded]
listen = "127.0.0.1:$mqtt_port"
[http]
listen = "127.0.0.1:$http_port"
[log]
level = "warn"
EOF
}
write_config embedded
"$bridge" check -c "$tmp/config.toml" >/dev/null

have_libcoap=1 have_mosquitto=1
command -v coap-server-notls >/dev/null || { have_libcoap=0; log "coap-server-notls not found: libcoap row skipped"; }
command -v mosquitto >/dev/null || { have_mosquitto=0; log "mosquitto not found: mosquitto rows skipped"; }

# wait_coap URL: until a PUT is answered (10 s at most).
wait_coap() {
	for _ in $(seq 100); do
		if "$bridge" coap put --timeout 200ms -p x "$1" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "no CoAP answer from $1" >&2
	return 1
}
wait_tcp() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on TCP $1" >&2
	return 1
}
start() { # name cmd...: runs pinned to the server CPU, sets $last_pid
	local name="$1"
	shift
	"${pin_srv[@]}" "$@" >"$tmp/$name.log" 2>&1 &
	last_pid=$!
	pids+=("$last_pid")
}
stop() { # pid
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
# bench SCENARIO ARGS...: a short warm-up, then one measured run appended to runs.tsv.
bench() {
	local name="$1"
	shift
	"${pin_load[@]}" "$bridge" bench ingress -w "$WORKERS" -d 500ms --drain 1s --max-loss 100 --method PUT "$@" >/dev/null 2>&1 || true
	local js
	if ! js="$("${pin_load[@]}" "$bridge" bench ingress -w "$WORKERS" -d "$DUR" --drain 3s --max-loss 100 --method PUT --json "$@" 2>"$tmp/bench.err")"; then
		log "$name: bench failed: $(cat "$tmp/bench.err")"
		return 0
	fi
	printf '%s\t%s\n' "$name" "$js" >>"$tmp/runs.tsv"
	log "$name: $(jq -c '{coap: .request.rate_per_s, e2e: .end_to_end.rate_per_s, lost}' <<<"$js" 2>/dev/null || echo done)"
}

run_round() {
	# Bare CoAP servers: the CoAP side only.
	start benchserver "$tmp/benchserver" -listen "127.0.0.1:$srv_port"
	local p=$last_pid
	wait_coap "coap://127.0.0.1:$srv_port/ingest"
	bench "coapside bare server" --coap "coap://127.0.0.1:$srv_port/ingest" --topic '' --pid "$p"
	stop "$p"

	if [ $have_libcoap = 1 ]; then
		start libcoap coap-server-notls -A 127.0.0.1 -p "$srv_port" -v 0
		p=$last_pid
		wait_coap "coap://127.0.0.1:$srv_port/example_data"
		bench "libcoap coap-server" --coap "coap://127.0.0.1:$srv_port/example_data" --topic '' --pid "$p"
		stop "$p"
	fi

	start gocoap "$tmp/gocoap" -listen "127.0.0.1:$srv_port"
	p=$last_pid
	wait_coap "coap://127.0.0.1:$srv_port/ingest"
	bench "go-coap v3 server" --coap "coap://127.0.0.1:$srv_port/ingest" --topic '' --pid "$p"
	stop "$p"

	# The bridge with its embedded broker.
	write_config embedded
	start bridge "$bridge" run -c "$tmp/config.toml"
	p=$last_pid
	wait_tcp "$mqtt_port"
	wait_coap "coap://127.0.0.1:$coap_port/bench0/warm"
	local mq="tcp://127.0.0.1:$mqtt_port"
	bench "bridge, no subscriber" --coap "coap://127.0.0.1:$coap_port/bench0/bench-{n}" --topic '' --pid "$p"
	bench "bridge + embedded, QoS 0" --coap "coap://127.0.0.1:$coap_port/bench0/bench-{n}" --mqtt "$mq" --topic 'bench0/+' --qos 0 --pid "$p"
	bench "bridge + embedded, QoS 1" --coap "coap://127.0.0.1:$coap_port/bench1/bench-{n}" --mqtt "$mq" --topic 'bench1/+' --qos 1 --pid "$p"
	stop "$p"

	if [ $have_mosquitto = 1 ]; then
		printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mosq_port" >"$tmp/mosquitto.conf"
		start mosquitto mosquitto -c "$tmp/mosquitto.conf"
		local mp=$last_pid
		wait_tcp "$mosq_port"
		write_config "tcp://127.0.0.1:$mosq_port"
		start bridge "$bridge" run -c "$tmp/config.toml"
		p=$last_pid
		wait_coap "coap://127.0.0.1:$coap_port/bench0/warm"
		mq="tcp://127.0.0.1:$mosq_port"
		bench "bridge + mosquitto, QoS 0" --coap "coap://127.0.0.1:$coap_port/bench0/bench-{n}" --mqtt "$mq" --topic 'bench0/+' --qos 0 --pid "$p" --pid "$mp"
		bench "bridge + mosquitto, QoS 1" --coap "coap://127.0.0.1:$coap_port/bench1/bench-{n}" --mqtt "$mq" --topic 'bench1/+' --qos 1 --pid "$p" --pid "$mp"
		stop "$p"
		stop "$mp"
	fi
}

start_s=$(date +%s)
for r in $(seq "$REPS"); do
	log "round $r of $REPS ($DUR per run)"
	run_round
done
elapsed=$(($(date +%s) - start_s))

{
	echo "- $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "- kernel $(uname -sr), $(go version | cut -d' ' -f3-)"
	echo "- load average before the run: $load_before"
	echo "- bridge at commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD -- '*.go' go.mod go.sum 2>/dev/null || echo ' (with local changes)')"
	echo "- libcoap $({ coap-server-notls -h 2>&1 || true; } | grep -m1 -o 'v[0-9][0-9.]*' || echo absent), mosquitto $({ mosquitto -h 2>&1 || true; } | grep -m1 -o '[0-9][0-9.]*[0-9]' || echo absent)"
	echo "- pinning: $pinning"
	echo "- $REPS rounds of $DUR per scenario, $WORKERS workers, CON PUT, 64-byte payload, loopback; run.sh took ${elapsed}s$([ "$QUICK" = 1 ] && echo ' (QUICK=1)')"
} >"$tmp/machine.md"

notes="Rate and latency are end to end (CoAP PUT sent -> message received by an MQTT
subscriber of the broker) where a broker is named, else CoAP request -> response.
\"CoAP rate/s\" is the rate of answered requests. \"vs bare\" and \"vs libcoap\" divide
the rate by that of the coapside bare server and of libcoap's server in this run.
CPU and RSS are the server's (bridge + mosquitto for the mosquitto rows) over the
load phase; CPU µs/msg is CPU time per answered request, and \"CPU/msg vs libcoap\"
divides it by libcoap's. The load generator (\`bridge bench\`: the CoAP client and
the MQTT subscriber in one process on one core) is itself a limit: a server below
100 % CPU was waiting for it, so its rate understates what it can do, while CPU
per message does not depend on the load. Compare ratios, not absolute numbers.${NOTES:+

$NOTES}"

(cd "$root" && go run ./e2e/bench/report -runs "$tmp/runs.tsv" -machine "$tmp/machine.md" \
	-title "bridge bench: ingress on loopback" -notes "$notes") >"$OUT"
cp "$tmp/runs.tsv" "${OUT%.md}.tsv"
log "wrote $OUT in ${elapsed}s"
