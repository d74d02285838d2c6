#!/usr/bin/env bash
# Soaks the built bridge for DURATION (a Go duration, default 10m) under a
# mixed load at half of the ingress peak it measures first: 1,000 observed
# `bridge sim` devices (100 of them rebooted every 90 s), pushes from 64
# well-behaved devices, commands, CoAP observers of resource rules, a rule
# reload every 30 s, one mosquitto restart and a 3 s flood from one source.
#
#   e2e/soak.sh [DURATION]
#
# The test builds the bridge into a temporary folder (never into the
# repository) and needs mosquitto. It prints a sample of the bridge's RSS,
# goroutines and open descriptors every 10 s, then the whole curve, the
# peak and soak rates, the errors among the well-behaved clients (which
# must be zero) and a flatness verdict; it exits non-zero on an error or a
# growing curve. The curve is also written as CSV to BRIDGE_SOAK_OUT
# (default a new file in the temporary folder; its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10m}
# go test's own limit: the soak plus up to 15 minutes of set-up, peak
# ramp and drain.
secs=$(awk -v d="$duration" 'BEGIN {
	n = 0; total = 0; ok = 1
	while (length(d) > 0) {
		if (!match(d, /^[0-9]+(\.[0-9]+)?(h|m|s)/)) { ok = 0; break }
		part = substr(d, 1, RLENGTH); d = substr(d, RLENGTH + 1)
		unit = substr(part, length(part)); v = substr(part, 1, length(part) - 1)
		total += v * (unit == "h" ? 3600 : unit == "m" ? 60 : 1); n++
	}
	if (!ok || n == 0) exit 1
	printf "%d", total
}') || { echo "usage: $0 [DURATION]  (e.g. 10m, 90s, 1h)" >&2; exit 2; }
out=${BRIDGE_SOAK_OUT:-$(mktemp -t bridge-soak.XXXXXX.csv)}

echo "== soak for $duration; curve: $out"
status=0
BRIDGE_SOAK=$duration BRIDGE_SOAK_OUT=$out BRIDGE_E2E_STRICT=1 \
	go test -v -count=1 -run '^TestSoak$' -timeout "$((secs + 900))s" ./e2e || status=$?
echo "== curve: $out"
exit $status
