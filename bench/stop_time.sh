#!/bin/bash
# VM stop per checkpoint against guest memory: the paper's Figure 3, ours.
# For each memory size and guest workload one guest runs, and the modes take
# turns (round-robin, so the machine's noise hits all alike), N checkpoints
# each: VM stop p50/p99 (QEMU's STOP to RESUME), the memory save (migrate to
# saved; for live: pre-copy included), the memory stream and the bytes each
# checkpoint added to the store. Then the guest's slowdown while
# checkpointing: a cpu guest's steps per second during back-to-back
# checkpoints in each mode, against windows without checkpoints around them.
# Prints markdown tables, writes the samples as CSV, and checks the targets.
# Usage: bench/stop_time.sh [BUILD_DIR]   (run by `make bench`)
# Settings: BENCH_MEMS (MiB list, "256 1024 2048 4096"), BENCH_WORKS
#   ("counter dirty:8 dirty:64"), BENCH_MODES ("stop-copy cow live auto"),
#   BENCH_N (10), BENCH_SLOW_MEM (1024), BENCH_SLOW_S (15),
#   BENCH_ACCEL (tcg), BENCH_CSV (file for the samples), BENCH_CSV_IN (a
#   samples file of an earlier run: only its tables and targets, nothing run).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/rel}
MEMS=${BENCH_MEMS:-256 1024 2048 4096}; WORKS=${BENCH_WORKS:-counter dirty:8 dirty:64}
MODES=${BENCH_MODES:-stop-copy cow live auto}; N=${BENCH_N:-10}
SLOW_MEM=${BENCH_SLOW_MEM:-1024}; SLOW_S=${BENCH_SLOW_S:-15}; ACCEL=${BENCH_ACCEL:-tcg}
D=$(mktemp -d /tmp/vmckpt-bench.XXXXXX)
CSV=${BENCH_CSV:-$D/samples.csv}
G=$(pwd)/build/guest
vk() { "$B/vmckpt" --socket "$D/state/vmckptd.sock" "$@"; }
cleanup() { kill "$AGENT" 2>/dev/null; wait "$AGENT" 2>/dev/null; pkill -9 -f "$D/" 2>/dev/null || true; rm -rf "$D"; }
"$B/vmckptd" --state-dir "$D/state" --set "qemu.accel=$ACCEL" >"$D/agent.log" 2>&1 &
AGENT=$!
trap cleanup EXIT
for _ in $(seq 50); do vk status >/dev/null 2>&1 && break; sleep 0.1; done

boot() { # boot ID MEM WORK: starts the guest and waits until it runs its work
    vk run "$1" --base "$G/base.qcow2" --kernel "$G/vmlinuz" --initrd "$G/initrd.img" \
        --work "$3" --memory "$2" >/dev/null
    local s; s=$(vk --json status "$1" | jq -r .serial_log)
    for _ in $(seq 600); do grep -aq "vmckpt-guest: up" "$s" && break; sleep 0.1; done
    sleep 5
}
# q P: the P-quantile (nearest rank) of the numbers on stdin
q() { sort -n | awk -v p="$1" '{a[NR]=$1} END {if (!NR) {print 0; exit}; i=int(p*NR+0.999999); if (i<1) i=1; if (i>NR) i=NR; print a[i]}'; }
ms() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1000}'; }
mib() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1048576}'; }

if [ -z "${BENCH_CSV_IN:-}" ]; then
echo "mem_mib,work,mode,round,stopped_us,mem_save_us,memory_bytes,uploaded_bytes,mode_used,why" > "$CSV"
echo "# VM stop per checkpoint, accel $ACCEL, $N checkpoints per mode and cell, modes taking turns"
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uname -r), $(qemu-system-x86_64 --version | head -1)"
id=0
for mem in $MEMS; do
    for work in $WORKS; do
        id=$((id + 1)); t="b$id"
        boot "$t" "$mem" "counter,$work"
        for r in $(seq "$N"); do
            for mode in $MODES; do
                if vk --json checkpoint "$t" --mode "$mode" > "$D/last.json" 2>"$D/last.err"; then
                    jq -r --arg m "$mem" --arg w "$work" --arg mode "$mode" --arg r "$r" \
                        '[$m, $w, $mode, $r, .stopped_us, .mem_save_us, .memory_bytes, .uploaded_bytes, .mode, (.mode_why // "" | gsub(","; ";"))] | @csv' \
                        "$D/last.json" | tr -d '"' >> "$CSV"
                else
                    echo "# $mem MiB $work $mode round $r: checkpoint failed: $(tail -1 "$D/last.err")" >&2
                fi
                sleep 1
            done
        done
        vk rm "$t" >/dev/null
        echo "# done: $mem MiB, $work" >&2
    done
done
else
    CSV=$BENCH_CSV_IN
fi

col() { awk -F, -v m="$1" -v w="$2" -v mode="$3" -v c="$4" 'NR > 1 && $1 == m && $2 == w && $3 == mode {print $c}' "$CSV"; }
echo
# Each checkpoint adds a layer to the running VM's local chain (issue 15 bounds
# it): round 1's stop is at a short chain, round N's at a long one.
echo "| memory | guest | mode | stop p50 | stop p99 | round 1 | round $N | memory save p50 | stream | added/ckpt | n |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for mem in $MEMS; do for work in $WORKS; do for mode in $MODES; do
    n=$(col "$mem" "$work" "$mode" 5 | wc -l)
    [ "$n" -gt 0 ] || continue
    added=$(col "$mem" "$work" "$mode" 8 | awk '{s+=$1} END {print NR ? s/NR : 0}')
    r1=$(awk -F, -v m="$mem" -v w="$work" -v mode="$mode" '$1 == m && $2 == w && $3 == mode && $4 == 1 {print $5}' "$CSV")
    rn=$(awk -F, -v m="$mem" -v w="$work" -v mode="$mode" -v n="$N" '$1 == m && $2 == w && $3 == mode && $4 == n {print $5}' "$CSV")
    echo "| $mem MiB | $work | $mode | $(ms "$(col "$mem" "$work" "$mode" 5 | q 0.5)") ms | $(ms "$(col "$mem" "$work" "$mode" 5 | q 0.99)") ms | $(ms "${r1:-0}") ms | $(ms "${rn:-0}") ms | $(ms "$(col "$mem" "$work" "$mode" 6 | q 0.5)") ms | $(mib "$(col "$mem" "$work" "$mode" 7 | q 0.5)") MiB | $(mib "$added") MiB | $n |"
done; done; done
echo
echo "auto's choices: $(awk -F, 'NR > 1 && $3 == "auto" {print $9}' "$CSV" | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')"

# ---- guest slowdown while checkpointing --------------------------------------
if [ -z "${BENCH_CSV_IN:-}" ]; then
boot slow "$SLOW_MEM" "cpu:100000000"
S=$(vk --json status slow | jq -r .serial_log)
step() { tr -d '\r' < "$S" | grep -a '^cpu: step' | tail -1 | sed 's/cpu: step \([0-9]*\).*/\1/'; }
window() { # window ckpt|idle MODE: steps per second over SLOW_S seconds
    local s0 t0 s1 t1 end
    s0=$(step); t0=$(date +%s.%N); end=$(( $(date +%s) + SLOW_S ))
    if [ "$1" = idle ]; then sleep "$SLOW_S"
    else while [ "$(date +%s)" -lt "$end" ]; do vk checkpoint slow --mode "$2" >/dev/null || true; done; fi
    s1=$(step); t1=$(date +%s.%N)
    awk -v a="$s0" -v b="$s1" -v x="$t0" -v y="$t1" 'BEGIN {printf "%.3f", (b - a) / (y - x)}'
}
echo
echo "| mode | guest steps/s checkpointing | without (windows around) | slowdown |"
echo "|---|---|---|---|"
for mode in $MODES; do
    i1=$(window idle); c=$(window ckpt "$mode"); i2=$(window idle)
    awk -v m="$mode" -v c="$c" -v a="$i1" -v b="$i2" 'BEGIN {i = (a + b) / 2; printf "| %s | %.2f | %.2f | %.0f%% |\n", m, c, i, (i > 0 ? 100 * (1 - c / i) : 0)}'
done
echo "(a $SLOW_MEM MiB cpu guest; back-to-back checkpoints for $SLOW_S s, uploads included: they share the host's CPUs)"
fi

# ---- targets -------------------------------------------------------------------
echo
ok=1
mems=($MEMS)
for work in $WORKS; do
    for mem in $MEMS; do
        p99=$(col "$mem" "$work" auto 5 | q 0.99)
        awk -v v="$p99" 'BEGIN {exit !(v <= 50000)}' && r=met || { r=MISSED; ok=0; }
        echo "target auto stop p99 <= 50 ms ($mem MiB, $work): $(ms "$p99") ms: $r"
        best=""
        for mode in $MODES; do
            [ "$mode" = auto ] && continue
            v=$(col "$mem" "$work" "$mode" 5 | q 0.99)
            [ -z "$best" ] || [ "$v" -lt "$best" ] && best=$v
        done
        awk -v a="$p99" -v b="$best" 'BEGIN {exit !(a <= 1.1 * b)}' && r=met || { r=MISSED; ok=0; }
        echo "target auto p99 within 10% of the best fixed mode's ($mem MiB, $work): $(ms "$p99") vs $(ms "$best") ms: $r"
        if [ "$mem" -ge 1024 ]; then
            sc=$(col "$mem" "$work" stop-copy 5 | q 0.5); au=$(col "$mem" "$work" auto 5 | q 0.5)
            awk -v a="$au" -v b="$sc" 'BEGIN {exit !(a * 10 <= b)}' && r=met || { r=MISSED; ok=0; }
            echo "target auto >= 10x below stop-copy ($mem MiB, $work): $(ms "$au") vs $(ms "$sc") ms: $r"
        fi
        ca=$(col "$mem" "$work" cow 8 | awk '{s+=$1} END {print NR ? s/NR : 0}')
        aa=$(col "$mem" "$work" auto 8 | awk '{s+=$1} END {print NR ? s/NR : 0}')
        awk -v a="$aa" -v b="$ca" 'BEGIN {exit !(a <= 1.1 * b)}' && r=met || { r=MISSED; ok=0; }
        echo "target auto's bytes per checkpoint within 10% of cow's ($mem MiB, $work): $(mib "$aa") vs $(mib "$ca") MiB: $r"
    done
    lo=$(col "${mems[0]}" "$work" auto 5 | q 0.5); hi=$(col "${mems[-1]}" "$work" auto 5 | q 0.5)
    awk -v a="$hi" -v b="$lo" 'BEGIN {exit !(a <= 1.5 * b)}' && r=met || { r=MISSED; ok=0; }
    echo "target auto stop at ${mems[-1]} MiB within 1.5x of ${mems[0]} MiB ($work, p50): $(ms "$hi") vs $(ms "$lo") ms: $r"
done
[ -n "${BENCH_CSV:-}" ] && echo "samples: $CSV"
[ "$ok" = 1 ]
