#!/bin/bash
# ThreadSanitizer: the unit tests, and the integration tests whose agents
# race the most (t_overlap: uploads, GC and restores behind gates;
# t_failover: leases, fences and take-overs; t_longrun: merges of layers,
# restarts, waits for merges; t_warm_shutdown: an agent stopped during a
# start ahead), built with -fsanitize=thread
# (`make SAN=thread`). An agent with a TSan report fails its "stops cleanly"
# check. Prints TAP. Usage: tests/tsan.sh [BUILD_DIR [PART...]]
# (default build/tsan; a PART is 'unit' or one of the tests named above, all
# of them by default: tests/run.sh runs each part beside the others).
set -u
cd "$(dirname "$0")/.."
B=${1:-build/tsan}
shift
[ $# -gt 0 ] || set -- unit t_overlap t_failover t_longrun t_warm_shutdown
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0}
n=0; log=$(mktemp); trap 'rm -f "$log"' EXIT
units=; for p in "$@"; do [ "$p" = unit ] && units=1; done
for t in ${units:+"$B"/tests/test_*}; do
    n=$((n + 1))
    if "$t" >"$log" 2>&1 && ! grep -q "WARNING: ThreadSanitizer" "$log"; then
        echo "ok $n - tsan: $(basename "$t")"
    else
        echo "not ok $n - tsan: $(basename "$t")"; grep -A12 "WARNING: ThreadSanitizer" "$log" | head -24 | sed 's/^/#   /'
    fi
done
for t in "$@"; do
    [ "$t" = unit ] && continue
    [ -f "tests/integration/$t.sh" ] || { echo "tsan.sh: no test tests/integration/$t.sh" >&2; exit 2; }
    n=$((n + 1))
    if BIN=$B bash "tests/integration/$t.sh" >"$log" 2>&1; then
        echo "ok $n - tsan: $t ($(grep -c '^ok' "$log") checks, agents clean)"
    else
        echo "not ok $n - tsan: $t"; grep -A14 "^not ok" "$log" | head -30 | sed 's/^/#   /'
    fi
done
echo "1..$n"
