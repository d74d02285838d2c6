#!/usr/bin/env bash
# Measures the per-source rate limit against a flat-out flood with the CPUs
# split: the flooder and a well-behaved device (200 CON/s) on CPU 0, the
# built bridge alone on CPU 1 (taskset). Prints, for a NON and a CON flood,
# the device's p99 unloaded and flooded, its losses, the bridge's CPU per
# dropped datagram and the kernel's receive-buffer drops.
#
#   e2e/flood.sh [LENGTH]      (a Go duration per phase, default 5s)
#
# BRIDGE_FLOOD_PIN_CHECK=1 makes it fail when the second source's p99 is
# above 2× unloaded or it lost a request.
set -euo pipefail
cd "$(dirname "$0")/.."
BRIDGE_FLOOD_PIN=1 BRIDGE_FLOOD_LENGTH=${1:-5s} BRIDGE_E2E_STRICT=1 \
	go test -v -count=1 -run '^TestE2EFloodPinned$' -timeout 300s ./e2e
