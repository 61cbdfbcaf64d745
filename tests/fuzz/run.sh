#!/bin/bash
# Runs each fuzz harness for SECONDS from its seed corpus (tests/fuzz/corpus/
# NAME, read only) into a working corpus under build/fuzz; prints TAP, one
# line per harness with its executions.
# Usage: run.sh SECONDS [NAME...]   (NAME: fuzz_manifest ...; default: all of
# tests/fuzz/fuzz_*.c; binaries from $FUZZ_BIN_DIR, default build/fuzz)
set -u
cd "$(dirname "$0")/../.."
secs=$1; shift
[ $# -gt 0 ] || set -- $(ls tests/fuzz/fuzz_*.c | xargs -n1 basename | sed 's/\.c$//')
dir=${FUZZ_BIN_DIR:-build/fuzz}
n=0; fail=0
mkdir -p build/fuzz/logs
for name in "$@"; do
    bin=$dir/$name
    seeds=tests/fuzz/corpus/${name#fuzz_}
    work=build/fuzz/corpus-${name#fuzz_}
    log=build/fuzz/logs/$name.log
    mkdir -p "$work"
    n=$((n + 1))
    # -rss_limit_mb: a harness may allocate what a chunk may be (16 MiB), not GiBs
    if "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        -artifact_prefix="build/fuzz/crash-$name-" "$work" "$seeds" >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "ok $n - $name: ${execs:-?} executions in ${secs} s, no crash"
    else
        fail=$((fail + 1))
        echo "not ok $n - $name: crashed (input kept as build/fuzz/crash-$name-*)"
        grep -m1 -A12 'ERROR: \|runtime error' "$log" | sed 's/^/#   /'
    fi
done
echo "1..$n"
[ "$fail" -eq 0 ]
