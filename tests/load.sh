#!/bin/bash
# The whole suite under CPU load: stress-ng keeps every CPU busy while
# tests/run.sh runs RUNS times in a row (default 3). Every run must pass: no
# test may depend on how fast the machine is at that moment.
# Usage: tests/load.sh BUILD_DIR   (run by `make check-load`)
# Settings: LOAD_RUNS (default 3), LOAD_CPUS (stress-ng workers, default nproc).
set -u
cd "$(dirname "$0")/.."
B=${1:-build/san}
runs=${LOAD_RUNS:-3}
cpus=${LOAD_CPUS:-$(nproc)}
command -v stress-ng >/dev/null || { echo "load: stress-ng not found (scripts/setup.sh installs it)"; exit 1; }
stress-ng --cpu "$cpus" --timeout 4h --quiet &
load=$!
trap 'kill "$load" 2>/dev/null; wait "$load" 2>/dev/null' EXIT
echo "# load: stress-ng --cpu $cpus (pid $load) beside $runs runs of the suite"
tp=0; tf=0; summary=()
for i in $(seq "$runs"); do
    start=$(date +%s)
    log=$(mktemp)
    bash tests/run.sh "$B" 2>&1 | tee "$log" | sed "s/^\([0-9]* passed, [0-9]* failed\)$/# run $i: \1/"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n1)
    rm -f "$log"
    p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
    [ -n "$line" ] || { p=0; f=1; }
    tp=$((tp + p)); tf=$((tf + f))
    summary+=("# run $i under load: ${line:-no result} in $(( $(date +%s) - start )) s")
done
printf '%s\n' "${summary[@]}"
echo "$tp passed, $tf failed"
[ "$tf" -eq 0 ]
