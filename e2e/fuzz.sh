#!/usr/bin/env bash
# Runs the module's fuzz targets, each for DURATION (a go test -fuzztime
# value such as 3s, 2m or 10m), at most FUZZ_JOBS (default 2) at a time with
# FUZZ_PARALLEL (default 1) fuzzing workers each. FUZZ_MINIMIZE (default
# 10s) bounds the time go test spends shrinking each new input.
#
#   e2e/fuzz.sh DURATION [PACKAGE_DIR|TARGET ...]
#
# With no further arguments every `func Fuzz...` in the module runs. An
# argument naming a package directory (./coapside/message) runs that
# package's targets; any other argument is a target name (FuzzDecode) and
# runs every target of that name. The script prints one line per target
# with its result and exits non-zero when any target failed; for a crash it
# prints the path of the failing input that go test wrote under the
# package's testdata/fuzz/ (a regression entry to keep once fixed). Logs go
# to FUZZ_LOGDIR (default a fresh temporary folder).
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 DURATION [PACKAGE_DIR|TARGET ...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
duration=$1
shift
jobs_max=${FUZZ_JOBS:-2}
parallel=${FUZZ_PARALLEL:-1}
minimize=${FUZZ_MINIMIZE:-10s}
logdir=${FUZZ_LOGDIR:-$(mktemp -d -t bridge-fuzz.XXXXXX)}
mkdir -p "$logdir"

want_pkgs=()
want_names=()
for a in "$@"; do
	if [ -d "$a" ]; then want_pkgs+=("./${a#./}"); else want_names+=("$a"); fi
done

# Packages whose test files declare a fuzz target; go test -list then names
# the targets as the compiler sees them.
if [ ${#want_pkgs[@]} -gt 0 ]; then
	pkgs=("${want_pkgs[@]}")
else
	mapfile -t pkgs < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | xargs -n1 dirname | sort -u | sed 's|^|./|')
fi
[ ${#pkgs[@]} -gt 0 ] || { echo "no package with fuzz targets" >&2; exit 1; }

module=$(go list -m)
targets=() # "./pkg Name"
list_out=$(go test -run '^$' -list '^Fuzz' "${pkgs[@]}" 2>&1) || { echo "$list_out" >&2; exit 1; }
names=()
while IFS= read -r line; do
	case "$line" in
	Fuzz*) names+=("$line") ;;
	ok*)
		pkg=$(awk '{print $2}' <<<"$line")
		dir=".${pkg#"$module"}"
		[ "$dir" = "." ] && dir="./."
		for n in "${names[@]}"; do targets+=("$dir $n"); done
		names=()
		;;
	esac
done <<<"$list_out"

if [ ${#want_names[@]} -gt 0 ]; then
	selected=()
	for t in "${targets[@]}"; do
		for n in "${want_names[@]}"; do
			[ "${t##* }" = "$n" ] && selected+=("$t")
		done
	done
	targets=("${selected[@]}")
fi
[ ${#targets[@]} -gt 0 ] || { echo "no fuzz target matched" >&2; exit 1; }

# Take the packages in turn, so that the targets running together come from
# different packages and no package's instrumented test binary is built
# twice at once.
mapfile -t targets < <(printf '%s\n' "${targets[@]}" | awk '{n[$1]++; print n[$1], NR, $0}' | sort -n -k1,1 -k2,2 | cut -d' ' -f3-)
echo "== fuzzing ${#targets[@]} targets for $duration each, $jobs_max at a time (logs: $logdir)"

# fuzz_once PKG NAME LOG: one go test -fuzz run, its output in LOG.
fuzz_once() {
	go test -run '^$' -fuzz "^$2\$" -fuzztime "$duration" -fuzzminimizetime "$minimize" -parallel "$parallel" "$1" >"$3" 2>&1
}

# run_one PKG NAME: fuzz one target; non-zero when it found a failure.
run_one() {
	local pkg=$1 name=$2 log
	log="$logdir/$(tr '/.' '__' <<<"${pkg#./}")-$name.log"
	local start=$SECONDS
	if fuzz_once "$pkg" "$name" "$log"; then
		echo "ok   $pkg $name ($((SECONDS - start))s)"
		return 0
	fi
	# Go's fuzz coordinator can fail a target with a bare "context deadline
	# exceeded" when -fuzztime ends while a starved worker is mid-call
	# (go.dev/issue/75804, fixed in Go 1.27). That failure writes no input
	# and names nothing to fix, so the target runs once more; a real finding
	# always writes its input and fails at once.
	if ! grep -q 'Failing input written to' "$log" && grep -q '^    context deadline exceeded' "$log"; then
		mv "$log" "$log.deadline"
		if fuzz_once "$pkg" "$name" "$log"; then
			echo "ok   $pkg $name ($((SECONDS - start))s, run twice: the first ended in Go's fuzz deadline race, log $log.deadline)"
			return 0
		fi
	fi
	echo "FAIL $pkg $name ($((SECONDS - start))s), log $log"
	# go test prints "Failing input written to testdata/fuzz/FuzzX/<hash>",
	# relative to the package directory.
	local input
	input=$(sed -n 's/.*Failing input written to \(testdata\/fuzz\/[^ ]*\).*/\1/p' "$log" | head -n1)
	if [ -n "$input" ]; then
		echo "     failing input: ${pkg#./}/$input"
		echo "     reproduce: go test -run '^$name/$(basename "$input")\$' $pkg"
	fi
	grep -m5 -E 'panic:|--- FAIL|fuzz_test|_test.go:[0-9]+' "$log" | sed 's/^/     /'
	return 1
}

failed=0
running=0
for t in "${targets[@]}"; do
	if [ "$running" -ge "$jobs_max" ]; then
		wait -n || failed=1
		running=$((running - 1))
	fi
	run_one "${t% *}" "${t##* }" &
	running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
	wait -n || failed=1
	running=$((running - 1))
done

if [ "$failed" -ne 0 ]; then
	echo "== fuzzing found failures" >&2
	exit 1
fi
echo "== fuzzing ok"
