#!/bin/bash
# checkpoint_every = auto against the best fixed interval, under a scripted
# random failure trace (bench/interval_sim.c), with the checkpoint cost C and
# the restore time R measured here: a counter task runs with --every auto
# until it has taken BENCH_CKPTS checkpoints (C: the cost auto measured, VM
# stop + the slowed share of the memory save, smoothed), then is killed and
# restored (R: kill to running). For each MTBF in BENCH_MTBFS: the loss of a
# sweep of fixed intervals, the best of them, and auto's; target: auto within
# 10% of the best fixed interval.
# Usage: bench/interval.sh [BUILD_DIR]   Settings: BENCH_CKPTS (10),
#        BENCH_MTBFS ("600 3600 86400"), BENCH_MEMORY (256)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$(cd "${1:-build/rel}" && pwd)
N=${BENCH_CKPTS:-10}
MEM=${BENCH_MEMORY:-256}
G=$(pwd)/build/guest
D=$(mktemp -d /var/tmp/vmckpt-interval.XXXXXX)
cleanup() { pkill -9 -f "$D/" 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
vk() { "$B/vmckpt" --socket "$D/state/vmckptd.sock" "$@"; }
"$B/vmckptd" --state-dir "$D/state" --set qemu.accel=tcg --set task.min_interval=1 \
    --set task.mtbf=60 >"$D/agent.log" 2>&1 &
AGENT=$!
for _ in $(seq 100); do vk status >/dev/null 2>&1 && break; sleep 0.1; done
# (mtbf 60 s keeps auto's interval short here, so that N checkpoints come soon)
vk run i1 --base "$G/base.qcow2" --kernel "$G/vmlinuz" --initrd "$G/initrd.img" \
    --work counter --memory "$MEM" --first 3 --every auto >/dev/null
for _ in $(seq 3000); do
    [ "$(vk --json status i1 | jq -r .interval.measured)" -ge "$N" ] && break; sleep 0.2
done
st=$(vk --json status i1)
C=$(echo "$st" | jq -r .interval.cost_s)
echo "measured: $(echo "$st" | jq -r .interval.measured) checkpoints, cost C = $C s; interval now: $(echo "$st" | jq -r .interval.why)"
pid=$(echo "$st" | jq -r .pid)
t0=$(date +%s.%N)
kill -9 "$pid" # [task] restart restores it
for _ in $(seq 600); do
    st=$(vk --json status i1)
    [ "$(echo "$st" | jq -r .state)" = running ] && [ "$(echo "$st" | jq -r .pid)" != "$pid" ] && break
    sleep 0.05
done
R=$(echo "$(date +%s.%N) - $t0" | bc)
echo "measured: kill -9 to running again (restart) R = $(printf '%.2f' "$R") s"
kill "$AGENT"; wait "$AGENT" 2>/dev/null || true
fail=0
for M in ${BENCH_MTBFS:-600 3600 86400}; do
    echo
    echo "### MTBF $M s"
    "$B/interval_sim" "$C" "$R" "$M" >"$D/sim" || fail=1
    grep -E '^(C |best|auto|target)' "$D/sim"
done
exit $fail
