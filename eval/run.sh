#!/bin/bash
# The paper's evaluation (section IV), regenerated: every experiment of
# eval/exp/ in turn, then the plots (eval/plot.sh) and the report
# (eval/report.sh). `make eval` runs it; `make eval QUICK=1` is the quick
# form (one run per point, fewer and smaller points, a few minutes) that the
# test suite runs to keep the scripts working.
# Usage: eval/run.sh [BUILD_DIR]   (default build/rel)
# Settings: QUICK (0), EVAL_OUT (eval/results), EVAL_REPORT (eval/REPORT.md),
#   EVAL_ONLY (experiments to run, e.g. "fig3 table2"; default all), EVAL_RUNS
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
t0=$(date +%s)
for x in $ONLY; do
    s=$(date +%s)
    echo "== eval: $x ($(sed -n 2p "$HERE/exp/$x.sh" | sed 's/^# //'))"
    bash "$HERE/exp/$x.sh" || { echo "eval: experiment $x failed" >&2; exit 1; }
    echo "== eval: $x done in $(( $(date +%s) - s )) s"
done
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
