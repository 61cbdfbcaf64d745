#!/bin/bash
# VM stop time per checkpoint: copy-on-write (background-snapshot) vs the
# paper's stop-and-copy, N checkpoints each, alternating, in one run on one
# guest. Prints a table with medians and the ratio, and checks the targets:
# cow median <= 50 ms and >= 10x below stop-copy.
# Usage: bench/stop_time.sh [BUILD_DIR]   (run by `make bench`)
# Settings: BENCH_MEMORY (MiB, 256), BENCH_N (10), BENCH_WORK (cpu:1000000),
#           BENCH_ACCEL (tcg).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/rel}
MEMORY=${BENCH_MEMORY:-256}; N=${BENCH_N:-10}; WORK=${BENCH_WORK:-cpu:1000000}
ACCEL=${BENCH_ACCEL:-tcg}
D=$(mktemp -d /tmp/vmckpt-bench.XXXXXX)
G=$(pwd)/build/guest
vk() { "$B/vmckpt" --socket "$D/state/vmckptd.sock" "$@"; }
cleanup() { kill "$AGENT" 2>/dev/null; wait "$AGENT" 2>/dev/null; pkill -9 -f "$D/" 2>/dev/null || true; rm -rf "$D"; }
"$B/vmckptd" --state-dir "$D/state" --set "qemu.accel=$ACCEL" >"$D/agent.log" 2>&1 &
AGENT=$!
trap cleanup EXIT
for _ in $(seq 50); do vk status >/dev/null 2>&1 && break; sleep 0.1; done
vk run bench --base "$G/base.qcow2" --kernel "$G/vmlinuz" --initrd "$G/initrd.img" \
    --work "$WORK" --memory "$MEMORY" >/dev/null
S=$(vk --json status bench | jq -r .serial_log)
for _ in $(seq 300); do grep -aq "vmckpt-guest: up" "$S" && break; sleep 0.1; done
sleep 3

: > "$D/cow"; : > "$D/sc"
for i in $(seq "$N"); do
    for mode in cow stop-copy; do
        vk --json checkpoint bench --mode "$mode" > "$D/last.json"
        f=$D/cow; [ "$mode" = stop-copy ] && f=$D/sc
        jq -r '"\(.stopped_us) \(.mem_save_us) \(.memory_bytes)"' "$D/last.json" >> "$f"
        sleep 1
    done
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
col() { awk -v c="$2" '{print $c}' "$1"; }
cow_med=$(col "$D/cow" 1 | median); sc_med=$(col "$D/sc" 1 | median)
cow_min=$(col "$D/cow" 1 | sort -n | head -1); cow_max=$(col "$D/cow" 1 | sort -n | tail -1)
sc_min=$(col "$D/sc" 1 | sort -n | head -1); sc_max=$(col "$D/sc" 1 | sort -n | tail -1)
cow_save=$(col "$D/cow" 2 | median); sc_save=$(col "$D/sc" 2 | median)
mem=$(col "$D/cow" 3 | median)
ms() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1000}'; }
ratio=$(awk -v a="$sc_med" -v b="$cow_med" 'BEGIN {printf "%.1f", a / b}')

echo "VM stop per checkpoint: $MEMORY MiB guest, work '$WORK', accel $ACCEL, $N checkpoints per mode, alternating"
echo "memory stream per checkpoint: $(awk -v v="$mem" 'BEGIN {printf "%.1f MiB", v / 1048576}')"
echo
printf '| %-22s | %12s | %10s | %10s | %16s |\n' "mode" "median stop" "min" "max" "memory save (med)"
printf '|%s|%s|%s|%s|%s|\n' "------------------------" "--------------" "------------" "------------" "------------------"
printf '| %-22s | %9s ms | %7s ms | %7s ms | %13s ms |\n' "copy-on-write (cow)" "$(ms "$cow_med")" "$(ms "$cow_min")" "$(ms "$cow_max")" "$(ms "$cow_save")"
printf '| %-22s | %9s ms | %7s ms | %7s ms | %13s ms |\n' "stop-copy (paper)" "$(ms "$sc_med")" "$(ms "$sc_min")" "$(ms "$sc_max")" "$(ms "$sc_save")"
echo
echo "ratio stop-copy / cow (medians): ${ratio}x"
ok=1
awk -v v="$cow_med" 'BEGIN {exit !(v <= 50000)}' && echo "target cow median <= 50 ms: met" || { echo "target cow median <= 50 ms: MISSED"; ok=0; }
awk -v r="$ratio" 'BEGIN {exit !(r >= 10)}' && echo "target >= 10x below stop-copy: met" || { echo "target >= 10x below stop-copy: MISSED"; ok=0; }
[ "$ok" = 1 ]
