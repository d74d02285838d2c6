#!/usr/bin/env bash
# Load comparison of this server with libcoap's coap-server and go-coap using
# ../shared/tools/coapload (CON GET and POST/PUT at 1/16/64 workers). Servers
# are pinned to CPU 1 and the load generator to CPU 0, one server at a time.
# Usage: compare.sh [duration] [tools-dir]   (defaults: 10s, ../../../../shared/tools)
set -euo pipefail
DUR="${1:-10s}"
here="$(cd "$(dirname "$0")" && pwd)"
TOOLS="${2:-$here/../../../../shared/tools}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
(cd "$here" && go build -o "$out/benchserver" .)
(cd "$TOOLS/coapload" && go build -o "$out/coapload" .)
(cd "$TOOLS/peers/gocoap" && go build -o "$out/gocoap" .)

run_load() { # name uri method
	for c in 1 16 64; do
		res=$(taskset -c 0 "$out/coapload" req -uri "$2" -method "$3" -size 64 -c "$c" -d "$DUR" -json | tail -1)
		echo "$1 $3 c=$c $res"
	done
}
wait_up() { sleep 1; }

port=56990
taskset -c 1 "$out/benchserver" -listen "127.0.0.1:$port" 2>/dev/null & pid=$!
wait_up
run_load coapside "coap://127.0.0.1:$port/ping" GET
run_load coapside "coap://127.0.0.1:$port/ingest" POST
kill -INT $pid; wait $pid || true

taskset -c 1 coap-server-notls -A 127.0.0.1 -p $port -v 0 & pid=$!
wait_up
run_load libcoap "coap://127.0.0.1:$port/time" GET
run_load libcoap "coap://127.0.0.1:$port/example_data" PUT
kill $pid; wait $pid || true

taskset -c 1 "$out/gocoap" -listen "127.0.0.1:$port" 2>/dev/null & pid=$!
wait_up
run_load gocoap "coap://127.0.0.1:$port/ping" GET
run_load gocoap "coap://127.0.0.1:$port/ingest" POST
kill $pid; wait $pid || true
