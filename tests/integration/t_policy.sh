#!/bin/bash
# The agent runs the checkpoint policy itself (first after T0, then every T),
# with no client attached, and a stop-copy default mode is honoured.
. "$(dirname "$0")/lib.sh"

start_agent a || { not_ok "agent starts"; finish; exit 1; }
t0=$(date +%s%N) # before p1 starts: its third checkpoint cannot come before t0 + 16 s
check "run with --first 8 --every 4" run_counter a p1 --first 8 --every 4 || { finish; exit 1; }
check "run a stop-copy task with --first 8" run_counter a p2 --first 8 --mode stop-copy
check "run a task with no policy" run_counter a p3
for _ in $(seq 1200); do
    [ "$(ls "$T"/store/tasks/p1/manifests 2>/dev/null | wc -l)" -ge 3 ] && break
    sleep 0.1
done
t1=$(date +%s%N)
n1=$(ls "$T"/store/tasks/p1/manifests 2>/dev/null | wc -l)
dt=$(( (t1 - t0) / 1000000 ))
[ "$n1" -ge 3 ] && ok "three periodic checkpoints without a client ($dt ms)" || not_ok "three periodic checkpoints" "got $n1"
[ "$dt" -ge 16000 ] && ok "not before first + 2 intervals (16 s)" || not_ok "not before first + 2 intervals" "$dt ms"
vk a --json show p2 1 | grep -q '"mode": "stop-copy"' && ok "default mode stop-copy is used" || not_ok "default mode stop-copy is used"
[ ! -e "$T/store/tasks/p3/manifests" ] && ok "a task with no policy is never checkpointed by itself" || not_ok "no policy, no checkpoint"
check "all periodic checkpoints verify" vk a verify p1
stop_agent a
finish
