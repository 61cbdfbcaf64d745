#!/bin/bash
# The main job on the directory store: start the agent, run a counter task,
# checkpoint it three times, crash its VM (kill -9), see the agent restore it
# by itself ([task] restart = on-crash), and print the timeline. Usage: scripts/demo.sh [BUILD_DIR]   (run by `make demo`)
# Settings: DEMO_MEMORY (MiB, default 256), DEMO_ACCEL (default tcg: KVM guests
# hang on some machines; set kvm where it works).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/rel}
MEMORY=${DEMO_MEMORY:-256}
ACCEL=${DEMO_ACCEL:-tcg}
D=$(pwd)/build/demo
G=$(pwd)/build/guest
START=$(date +%s.%N)

say() { printf '[%6.1f s] %s\n' "$(echo "$(date +%s.%N) - $START" | bc)" "$*"; }
vk() { "$B/vmckpt" --socket "$D/state/vmckptd.sock" "$@"; }
serial() { vk --json status demo | jq -r .serial_log; }
counter_now() { tr -d '\r' < "$1" | grep -a '^counter [0-9]' | tail -n1 | awk '{print $2}'; }
wait_counter() { for _ in $(seq 900); do c=$(counter_now "$1"); [ -n "$c" ] && [ "$c" -ge "$2" ] && return 0; sleep 0.1; done; return 1; }

cleanup() {
    [ -n "${AGENT:-}" ] || return 0
    vk rm demo >/dev/null 2>&1 || true
    kill "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null || true
}
trap cleanup EXIT

pkill -f "$D/state/" 2>/dev/null || true
rm -rf "$D"; mkdir -p "$D"
"$B/vmckptd" --state-dir "$D/state" --set "qemu.accel=$ACCEL" >"$D/agent.log" 2>&1 &
AGENT=$!
for _ in $(seq 50); do vk status >/dev/null 2>&1 && break; sleep 0.1; done
say "agent started: state $D/state, store file://$D/state/store (log: $D/agent.log)"

vk run demo --base "$G/base.qcow2" --kernel "$G/vmlinuz" --initrd "$G/initrd.img" \
    --work counter --memory "$MEMORY" >/dev/null
S=$(serial)
say "task 'demo' started: $MEMORY MiB, accel $ACCEL, base $G/base.qcow2 (read-only) + delta"
wait_counter "$S" 3 || { echo "guest did not start counting; see $S"; exit 1; }
say "guest is counting (counter $(counter_now "$S")); its console: $S"

for i in 1 2 3; do
    mode=auto; [ "$i" = 3 ] && mode=stop-copy # auto: the default; stop-copy: the paper's
    sleep 2
    vk --json checkpoint demo --mode "$mode" > "$D/ck$i.json"
    bytes=$(vk --json show demo "$i" | jq .serial_bytes)
    at=$(head -c "$bytes" "$S" | tr -d '\r' | grep -a '^counter [0-9]' | tail -n1 | awk '{print $2}')
    say "$(jq -r --arg at "$at" '"checkpoint \(.seq) (\(.mode)): VM stopped \(.stopped_us/100|floor/10) ms, memory saved in \(.mem_save_us/1000|floor) ms, \(.uploaded_bytes/1048576*10|floor/10) MiB stored in \(.store_us/1000|floor) ms; guest counter was \($at)"' "$D/ck$i.json")"
done
echo; vk ls demo; echo

sleep 2
before=$(counter_now "$S")
pid=$(vk --json status demo | jq .pid)
kill -9 "$pid"
KILLED=$(date +%s.%N)
say "VM killed with kill -9 (pid $pid) at counter $before: the task has crashed"
# [task] restart = on-crash (the default): the agent restores it by itself.
for _ in $(seq 1200); do
    vk --json status demo > "$D/restore.json"
    [ "$(jq -r .state "$D/restore.json")" = running ] && [ "$(jq -r .pid "$D/restore.json")" != "$pid" ] && break
    sleep 0.1
done
[ "$(jq -r .state "$D/restore.json")" = running ] || { echo "the agent did not restart the task; see $D/agent.log"; exit 1; }
S2=$(jq -r .serial_log "$D/restore.json")
say "$(jq -r --arg s "$(printf '%.1f' "$(echo "$(date +%s.%N) - $KILLED" | bc)")" '"the agent noticed and restored it by itself, \($s) s after the kill: from checkpoint \(.restore.from_seq), fetch \(.restore.fetch_us/1000|floor) ms, load + resume \(.restore.load_us/1000|floor) ms"' "$D/restore.json")"
wait_counter "$S2" 1 || { echo "restored guest does not count; see $S2"; exit 1; }
first=$(tr -d '\r' < "$S2" | grep -a '^counter [0-9]' | head -n1 | awk '{print $2}')
say "guest continues at counter $first (checkpoint 3 was taken at $at; $((before - at)) ticks after it were lost with the crash)"
sleep 2
if grep -aq MISMATCH "$S2"; then
    say "ERROR: the guest found its disk and memory disagree"; exit 1
fi
say "guest checked its disk against its memory at every tick since: consistent (now at $(counter_now "$S2"))"
[ "$first" = "$((at + 1))" ] || { say "ERROR: expected counter $((at + 1))"; exit 1; }
echo; vk status
echo; say "done. Checkpoints stay in $D/state/store; the task is removed at exit."
