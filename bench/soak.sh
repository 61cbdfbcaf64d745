#!/bin/bash
# Soak: tasks checkpointed once a second for a long time (one agent, the
# directory store, [data] keep set), then one killed and restored.
# Reported, first 100 against last 100 checkpoints of each task: the VM stop
# p50/p99, the memory save p50, the bytes added p50; and, sampled every
# SOAK_SAMPLE_S seconds: the agent's RSS and open fds, QEMU's open fds, the
# local layer files, the store's size. Targets: stop p99 of the last 100
# within 20% of the first 100; agent RSS flat (its least-squares trend over
# the samples after 100 checkpoints, projected over the run, within 10% of
# its mean) and fds flat (+4 at most from the first sample after 100); the local chain
# at most max_local_chain at every sample; the store bounded (its size at the
# end within 25% of its size after the first 100); the restore consistent.
# Usage: bench/soak.sh [BUILD_DIR]   Settings: SOAK_CHECKPOINTS (1000 per
#        task), SOAK_TASKS (1), SOAK_MEMORY (128 MiB), SOAK_KEEP (10),
#        SOAK_SAMPLE_S (10), SOAK_WORK (counter)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$(cd "${1:-build/rel}" && pwd)
N=${SOAK_CHECKPOINTS:-1000}
TASKS=${SOAK_TASKS:-1}
MEM=${SOAK_MEMORY:-128}
KEEP=${SOAK_KEEP:-10}
SAMPLE=${SOAK_SAMPLE_S:-10}
WORK=${SOAK_WORK:-counter}
MAXLOCAL=4
G=$(pwd)/build/guest
D=$(mktemp -d /var/tmp/vmckpt-soak.XXXXXX)
cleanup() { pkill -9 -f "$D/" 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
vk() { "$B/vmckpt" --socket "$D/state/vmckptd.sock" "$@"; }
now() { date +%s.%N; }

"$B/vmckptd" --state-dir "$D/state" --set qemu.accel=tcg --set "data.keep=$KEEP" --set data.gc_grace=60 \
    --set "data.max_local_chain=$MAXLOCAL" >"$D/agent.log" 2>&1 &
AGENT=$!
for _ in $(seq 100); do vk status >/dev/null 2>&1 && break; sleep 0.1; done
for k in $(seq "$TASKS"); do
    vk run "s$k" --base "$G/base.qcow2" --kernel "$G/vmlinuz" --initrd "$G/initrd.img" \
        --work "$WORK" --memory "$MEM" --first 5 --every 1 >/dev/null
done
echo "# soak: $TASKS task(s) of $MEM MiB ($WORK), a checkpoint a second each, $N each, keep $KEEP, max_local_chain $MAXLOCAL"

committed() { grep -c "task $1: checkpoint [0-9]* committed" "$D/agent.log" || true; }
sample() { # one line: elapsed, per task committed, agent rss/fds, qemu fds, layer files, store bytes
    local t line rss fds
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$AGENT/status")
    fds=$(ls "/proc/$AGENT/fd" | wc -l)
    line="$(printf '%.0f' "$(echo "$(now) - $T0" | bc)") $rss $fds"
    for k in $(seq "$TASKS"); do
        t=$(vk --json status "s$k")
        local pid run
        pid=$(echo "$t" | jq -r .pid); run=$(dirname "$(echo "$t" | jq -r .serial_log)")
        line="$line s$k:$(committed "s$k"):$(ls "/proc/$pid/fd" 2>/dev/null | wc -l):$(compgen -G "$run/top-*.qcow2" | wc -l):$(echo "$t" | jq -r .local_chain.depth)"
    done
    echo "$line $({ du -sb "$D/state/store" 2>/dev/null || true; } | awk '{print $1}')" # (GC may delete a file mid-walk)
}
T0=$(now)
: >"$D/samples"
while :; do
    done_all=1
    for k in $(seq "$TASKS"); do [ "$(committed "s$k")" -ge "$N" ] || done_all=0; done
    sample >>"$D/samples"
    [ "$done_all" = 1 ] && break
    kill -0 "$AGENT" || { echo "agent died"; tail "$D/agent.log"; exit 1; }
    sleep "$SAMPLE"
done
elapsed=$(echo "$(now) - $T0" | bc)
echo "# $(printf '%.0f' "$elapsed") s for $N checkpoints per task"
echo
echo "samples: seconds, agent RSS KiB, agent fds, then per task name:committed:QEMU fds:layer files:chain depth, store bytes"
awk 'NR == 1 || NR % 12 == 0' "$D/samples" | sed 's/^/  /'
tail -1 "$D/samples" | sed 's/^/  /'

# Per task: first 100 against last 100 committed checkpoints, from the log.
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100+0.999); if (i<1) i=1; print a[i]}'; }
fail=0
echo
echo "| task | checkpoints | stop p50 first/last (ms) | stop p99 first/last (ms) | save p50 first/last (ms) | added p50 first/last (KiB) |"
echo "|---|---|---|---|---|---|"
for k in $(seq "$TASKS"); do
    sed -n "s/.*task s$k: checkpoint [0-9]* committed ([a-z-]*, VM stopped \([0-9.]*\) ms, memory saved in \([0-9.]*\) ms, \([0-9]*\) bytes.*/\1 \2 \3/p" \
        "$D/agent.log" >"$D/c$k"
    total=$(wc -l <"$D/c$k")
    head -100 "$D/c$k" >"$D/f$k"; tail -100 "$D/c$k" >"$D/l$k"
    col() { awk -v c="$2" '{print $c}' "$1"; }
    s50f=$(col "$D/f$k" 1 | pct 50); s50l=$(col "$D/l$k" 1 | pct 50)
    s99f=$(col "$D/f$k" 1 | pct 99); s99l=$(col "$D/l$k" 1 | pct 99)
    m50f=$(col "$D/f$k" 2 | pct 50); m50l=$(col "$D/l$k" 2 | pct 50)
    b50f=$(( $(col "$D/f$k" 3 | pct 50) / 1024 )); b50l=$(( $(col "$D/l$k" 3 | pct 50) / 1024 ))
    echo "| s$k | $total | $s50f / $s50l | $s99f / $s99l | $m50f / $m50l | $b50f / $b50l |"
    if [ "$(echo "$s99l <= 1.2 * $s99f" | bc)" = 1 ]; then echo "target stop p99 last within 20% of first (s$k): met"
    else echo "target stop p99 last within 20% of first (s$k): MISSED"; fail=1; fi
done

# Flat resources: the first sample after 100 checkpoints against the last.
awk -v t="$TASKS" '{split($4, f, ":"); if (f[2] >= 100) {print; exit}}' "$D/samples" >"$D/base"
read -r _ rss0 fds0 _ <"$D/base" || true
read -r _ rss1 fds1 _ < <(tail -1 "$D/samples")
store0=$(awk '{print $NF}' "$D/base"); store1=$(tail -1 "$D/samples" | awk '{print $NF}')
deepest=$(awk '{for (i = 4; i < NF; i++) {split($i, f, ":"); if (f[5] > m) m = f[5]}} END {print m + 0}' "$D/samples")
echo
echo "agent RSS $rss0 -> $rss1 KiB, agent fds $fds0 -> $fds1, store $store0 -> $store1 bytes, deepest local chain $deepest"
chk() { if [ "$2" = 1 ]; then echo "target $1: met"; else echo "target $1: MISSED"; fail=1; fi; }
# RSS wanders with the allocator's arenas: its trend is the least-squares
# slope over the samples after 100 checkpoints, projected over the run.
read -r growth mean < <(awk '{split($4, f, ":"); x = f[2]; if (x < 100) next; n++; sx += x; sy += $2;
    sxx += x * x; sxy += x * $2; if (x > hi) hi = x; if (!lo || x < lo) lo = x}
    END {b = n > 2 ? (n * sxy - sx * sy) / (n * sxx - sx * sx) : 0; print b * (hi - lo), sy / (n ? n : 1)}' "$D/samples")
echo "agent RSS trend: $(printf '%.0f' "$growth") KiB over the run (slope x checkpoints), mean $(printf '%.0f' "$mean") KiB"
chk "agent RSS flat (trend over the run within 10% of its mean)" "$(echo "$growth <= 0.1 * $mean" | bc)"
chk "agent fds flat (+4 at most)" "$([ "$fds1" -le $((fds0 + 4)) ] && echo 1 || echo 0)"
chk "local chain <= $MAXLOCAL at every sample" "$([ "$deepest" -le "$MAXLOCAL" ] && echo 1 || echo 0)"
chk "store bounded (within 25%)" "$(echo "$store1 <= 1.25 * $store0" | bc)"

# Kill the first task's VM and restore it by hand: consistent?
pid=$(vk --json status s1 | jq -r .pid)
seq=$(vk --json status s1 | jq -r .last_checkpoint.seq)
vk kill s1 >/dev/null
for _ in $(seq 600); do vk restore s1 >/dev/null 2>&1 && break; sleep 0.1; done # (an upload may still end)
S=$(vk --json status s1 | jq -r .serial_log)
for _ in $(seq 300); do tr -d '\r' <"$S" | grep -aq '^counter [0-9]' && break; sleep 0.1; done
sleep 3
ok=$(tr -d '\r' <"$S" | grep -ac '^counter [0-9]' || true)
if [ "$ok" -gt 1 ] && ! grep -aq MISMATCH "$S"; then echo "target restore after $seq checkpoints consistent: met (counting, disk matches memory)"
else echo "target restore consistent: MISSED"; fail=1; fi
kill "$AGENT"; wait "$AGENT" 2>/dev/null || true
exit $fail
