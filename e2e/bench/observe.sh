#!/usr/bin/env bash
# Observations held by the bridge: `bridge bench observe` runs DEVICES
# in-process CoAP devices with PATHS observable resources each, the bridge
# (embedded broker) observes all of them through an [[observe]] rule, then
# the devices notify at RATE per second in total for DUR.
#
# Each scenario ("DEVICESxPATHS", space separated in SCENARIOS) gets a fresh
# bridge: it starts with no rules, the bench's devices come up, then the
# rules are moved into the bridge's rule folder, so the time until every
# observation is established counts from the devices being up (it includes
# the rule reload). The bench is pinned to CPU 0 and the bridge to CPU 1.
#
# Usage: e2e/bench/observe.sh
#        SCENARIOS="1000x4 10000x10" RATE=10000 DUR=20s e2e/bench/observe.sh
# Environment: SCENARIOS (default "2500x4 10000x10"), RATE (10000), DUR
# (20s), READY (5m), MAX_AGE (60s), BASE_PORT (first device port, 20000),
# PORT (the bridge's CoAP/MQTT/HTTP ports PORT..PORT+2, 47410), OUT (a
# directory for the reports, logs and metrics; a temporary one by default).
# The devices need one file descriptor each: the script raises `ulimit -n`
# to the hard limit.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
SCENARIOS="${SCENARIOS:-2500x4 10000x10}"
RATE="${RATE:-10000}"
DUR="${DUR:-20s}"
READY="${READY:-5m}"
MAX_AGE="${MAX_AGE:-60s}"
BASE_PORT="${BASE_PORT:-20000}"
PORT="${PORT:-47410}"

tmp="$(mktemp -d)"
OUT="${OUT:-$tmp/out}"
mkdir -p "$OUT"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp/rules" "$tmp/bridge"
}
trap cleanup EXIT
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

ulimit -n "$(ulimit -Hn)"
pin_load=() pin_srv=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	pin_load=(taskset -c 0) pin_srv=(taskset -c 1)
fi

log "building into $tmp"
(cd "$root" && go build -o "$tmp/bridge" ./cmd/bridge)
bridge="$tmp/bridge"
mkdir -p "$tmp/rules"
cat >"$tmp/config.toml" <<EOF
rules = ["$tmp/rules/*.toml"]
[coap]
listen = "127.0.0.1:$PORT"
[mqtt]
broker = "embedded"
status_topic = "-"
[mqtt.embedded]
listen = "127.0.0.1:$((PORT + 1))"
[http]
listen = "127.0.0.1:$((PORT + 2))"
[log]
level = "warn"
EOF

wait_tcp() {
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on TCP $1" >&2
	return 1
}
# wait_udp PORT: until a UDP socket is bound to PORT (the last device's).
wait_udp() {
	local hex
	hex="$(printf ':%04X ' "$1")"
	for _ in $(seq 1200); do
		if grep -q "$hex" /proc/net/udp; then return 0; fi
		sleep 0.1
	done
	echo "no device on UDP $1" >&2
	return 1
}

# udp_drops PID: the local port and kernel drop count (receive buffer
# full) of each of the process's UDP sockets, from /proc/net/udp and udp6.
udp_drops() {
	local ino
	for ino in $(find "/proc/$1/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null | tr -dc '0-9\n'); do
		awk -v ino="$ino" 'FNR > 1 && $10 == ino { split($2, a, ":"); print "udp port 0x" a[2], "drops", $13 }' /proc/net/udp /proc/net/udp6
	done
}

for sc in $SCENARIOS; do
	devices="${sc%x*}" paths="${sc#*x}"
	name="${devices}x${paths}"
	rm -f "$tmp/rules/"*.toml
	"${pin_srv[@]}" "$bridge" run -c "$tmp/config.toml" >"$OUT/$name.bridge.log" 2>&1 &
	bp=$!
	pids+=("$bp")
	wait_tcp $((PORT + 1))
	wait_tcp $((PORT + 2))
	flags=(--devices "$devices" --paths "$paths" --base-port "$BASE_PORT" --max-age "$MAX_AGE")
	"$bridge" bench observe "${flags[@]}" --rules >"$tmp/obs.toml.new"
	log "$name: $((devices * paths)) observations, bridge pid $bp"
	"${pin_load[@]}" "$bridge" bench observe "${flags[@]}" --mqtt "tcp://127.0.0.1:$((PORT + 1))" \
		--rate "$RATE" -d "$DUR" --ready "$READY" --drain 10s --max-loss 100 --pid "$bp" --json \
		>"$OUT/$name.json" 2>"$OUT/$name.err" &
	lp=$!
	pids+=("$lp")
	wait_udp $((BASE_PORT + devices - 1))
	mv "$tmp/obs.toml.new" "$tmp/rules/obs.toml"
	# Every second: the bridge's RSS, goroutines, stacks, heap and
	# observations held, while the bench runs.
	(
		while kill -0 "$lp" 2>/dev/null; do
			m="$(curl -s "http://127.0.0.1:$((PORT + 2))/metrics" | awk '/^(go_goroutines|go_memstats_stack_inuse_bytes|go_memstats_heap_inuse_bytes|bridge_observations_active) / { printf " %s=%.0f", $1, $2 }')"
			printf '%s rss_kb=%s%s\n' "$(date -u +%H:%M:%S)" "$(awk '/^VmRSS/ { print $2 }' "/proc/$bp/status")" "$m"
			sleep 1
		done
	) >"$OUT/$name.samples" 2>/dev/null &
	sp=$!
	wait "$lp" || log "$name: bench failed: $(cat "$OUT/$name.err")"
	wait "$sp" || true
	curl -s "http://127.0.0.1:$((PORT + 2))/metrics" >"$OUT/$name.metrics" || true
	grep -E '^(bridge_observations_active|bridge_observe_stale_dropped_total|bridge_observe_notifications_deferred_total|bridge_coap_peer_yields_total|go_goroutines|go_memstats_heap_inuse_bytes) ' "$OUT/$name.metrics" >&2 || true
	udp_drops "$bp" | tee "$OUT/$name.drops" >&2
	kill "$bp" 2>/dev/null || true
	wait "$bp" 2>/dev/null || true
	log "$name: $(cat "$OUT/$name.json")"
done
log "reports in $OUT"
