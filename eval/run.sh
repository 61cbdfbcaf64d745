#!/bin/bash
# The paper's evaluation (section IV), regenerated: every experiment of
# eval/exp/ in turn, then the plots (eval/plot.sh) and the report
# (eval/report.sh). `make eval` runs it; `make eval QUICK=1` is the quick
# form (one run per point, fewer and smaller points, a few minutes) that the
# test suite runs to keep the scripts working.
# Usage: eval/run.sh [BUILD_DIR]   (default build/rel)
# Settings: QUICK (0), EVAL_OUT (eval/results), EVAL_REPORT (eval/REPORT.md),
#   EVAL_ONLY (experiments to run, e.g. "fig3 table2"; default all), EVAL_JOBS
#   (experiments at once: 4 with QUICK, else 1), EVAL_RUNS
#   (runs per point: 3, or 1 with QUICK), and each experiment's own (see
#   eval/exp/*.sh). Needs root (network namespaces, tc, servers, drop_caches).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export B=${1:-${B:-build/rel}}
export QUICK=${QUICK:-0}
export EVAL_OUT=${EVAL_OUT:-$HERE/results}
REPORT=${EVAL_REPORT:-$HERE/REPORT.md}
ALL="table1 fig3 fig4 fig5 fig6 table3 table2 fig9"
ONLY=${EVAL_ONLY:-$ALL}
[ "$(id -u)" = 0 ] || { echo "eval: needs root (network namespaces, tc, the servers, dropping the page cache)" >&2; exit 1; }
for x in $ONLY; do [[ " $ALL " == *" $x "* ]] || { echo "eval: no experiment '$x' (there are: $ALL)" >&2; exit 2; }; done
mkdir -p "$EVAL_OUT"
source <(sed -n '/^machine()/,/^}/p' "$HERE/lib.sh")
ACCEL=${EVAL_ACCEL:-tcg}
echo "$(machine); $(date -u +%Y-%m-%d)" >"$EVAL_OUT/machine.txt"
if [ "$QUICK" = 1 ]; then echo "quick form, one run per point" >"$EVAL_OUT/mode.txt"
else echo "${EVAL_RUNS:-3} runs per point" >"$EVAL_OUT/mode.txt"; fi
[ -z "${EVAL_KERNEL:-}" ] || sed -i "s|\$|, the guest booting $(basename "$EVAL_KERNEL")|" "$EVAL_OUT/mode.txt"
t0=$(date +%s)
# The full form runs one experiment at a time: its figures are timings. The
# quick form only proves the scripts work, so its experiments run side by
# side (EVAL_JOBS, default 4), each into a log of its own, printed as it ends.
JOBS=${EVAL_JOBS:-$([ "$QUICK" = 1 ] && echo 4 || echo 1)}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "eval: EVAL_JOBS wants a count of at least 1, not '$JOBS'" >&2; exit 2; }
LOGS=$EVAL_OUT/logs
mkdir -p "$LOGS"
declare -A RUNNING=() BEGAN=()
# An interrupted run ends its experiments, whose exit hooks stop their agents,
# guests and servers (each experiment's eval/lib.sh cleans up on any exit).
stop_exps() { # stop_exps EXIT_CODE WHY
    trap - INT TERM HUP
    for p in "${!RUNNING[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${!RUNNING[@]}"; do wait "$p" 2>/dev/null; done
    echo "eval: $2${RUNNING[*]:+; ended the experiments still running: ${RUNNING[*]}}" >&2
    exit "$1"
}
trap 'stop_exps 130 interrupted' INT TERM HUP
finish_one() { # waits for one experiment; prints its log and time; fails with it
    local p= rc=0 x
    wait -n -p p || rc=$? # (set -e: an experiment that failed is reported, not fatal here)
    [ -n "$p" ] || return 0
    x=${RUNNING[$p]}; unset "RUNNING[$p]"
    [ "$JOBS" -gt 1 ] && cat "$LOGS/$x.log"
    if [ "$rc" -ne 0 ]; then
        echo "eval: experiment $x failed (exit $rc; log: $LOGS/$x.log)" >&2
        [ "$JOBS" -gt 1 ] && tail -n 20 "$LOGS/$x.log" >&2
        stop_exps 1 "experiment $x failed"
    fi
    echo "== eval: $x done in $(( $(date +%s) - BEGAN[$x] )) s"
}
# side by side, the longest first (the report's order does not depend on it)
ORDER=$ONLY
if [ "$JOBS" -gt 1 ]; then
    ORDER=$(for x in table2 table3 fig9 fig5 fig4 fig3 fig6 table1; do
        if [[ " $ONLY " == *" $x "* ]]; then echo "$x"; fi; done)
fi
for x in $ORDER; do
    while [ ${#RUNNING[@]} -ge "$JOBS" ]; do finish_one; done
    echo "== eval: $x ($(sed -n 2p "$HERE/exp/$x.sh" | sed 's/^# //'))"
    BEGAN[$x]=$(date +%s)
    if [ "$JOBS" -gt 1 ]; then bash "$HERE/exp/$x.sh" >"$LOGS/$x.log" 2>&1 &
    else (bash "$HERE/exp/$x.sh" 2>&1 | tee "$LOGS/$x.log") & fi
    RUNNING[$!]=$x
done
while [ ${#RUNNING[@]} -gt 0 ]; do finish_one; done
trap - INT TERM HUP
bash "$HERE/plot.sh" "$EVAL_OUT"
bash "$HERE/report.sh" "$EVAL_OUT" "$REPORT"
# The full run into the default place puts its headline figures into the
# README, between its markers: the README's figures come from the report.
README=$HERE/../README.md
if [ "$QUICK" = 0 ] && [ "$EVAL_OUT" = "$HERE/results" ] && [ "$ONLY" = "$ALL" ] && grep -q '^<!-- eval:headline:begin' "$README"; then
    awk -v h="$EVAL_OUT/headline.md" '/^<!-- eval:headline:begin/ { print; while ((getline l < h) > 0) print l; skip = 1; next }
        /^<!-- eval:headline:end/ { skip = 0 } !skip' "$README" >"$README.tmp" && mv "$README.tmp" "$README"
    echo "eval: the README's headline figures are this run's"
fi
echo "eval: done in $(( $(date +%s) - t0 )) s: $EVAL_OUT, $REPORT"
