#!/bin/bash
# Protection that never silently stops. A task started with --every alone
# is checkpointed on that schedule from its start, and again after each path
# that makes its VM run again here: the automatic restart, an agent restart
# that adopts it, a restore on another agent (a take-over and a move go the
# same way: cluster.sh's and t_move's tasks have --every alone too). Status
# and metrics give the unprotected time against the schedule's promise
# (t_counter: a task with no schedule is said to have none). Each run's
# console log outlives its run and `vmckpt rm`, until `rm --purge` or
# [task] log_expire_days; a restored run says where it came from. A restart
# reads the memory image kept on the node, not the store; a damaged kept
# image is not used (the store is read instead).
. "$(dirname "$0")/lib.sh"
EVERY=4

# committed_after AGENT TASK SEQ: a checkpoint numbered above SEQ commits
# without being asked (up to 240 s: how long is the machine's, not the
# schedule's); sets took to the seconds it took
committed_after() {
    local t0=$EPOCHREALTIME s
    for _ in $(seq 1200); do
        s=$(vkp "$1" --json status "$2" | jq -r '.last_checkpoint.seq // 0')
        if [ "$s" -gt "$3" ]; then took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'); return 0; fi
        sleep 0.2
    done
    return 1
}
newest() { vkp "$1" --json status "$2" | jq -r '.last_checkpoint.seq // 0'; }

start_agent a && ok "agent a starts" || { not_ok "agent a starts"; finish; exit 1; }
check_fails "a --work of two words is refused, naming the field" "field 'work'" \
    vk a run bad --base "$GUEST/base.qcow2" --kernel "$KERNEL" --initrd "$GUEST/initrd.img" \
    --memory "$MEM" --work "counter x.y=1"
check "run p1 with --every $EVERY alone" run_counter a p1 --every "$EVERY" || { finish; exit 1; }
committed_after a p1 0 && ok "a checkpoint commits by itself after the start ($took s)" \
    || not_ok "a checkpoint commits by itself after the start" "$(vk a status p1)"
echo "# start to first checkpoint: $took s (--every $EVERY)"

st=$(vk a --json status p1)
[ "$(jq -r .protection.state <<<"$st")" = protected ] && [ "$(jq -r '.protection.promise_s | floor' <<<"$st")" -ge "$EVERY" ] \
    && ok "status: protected, the promise is the interval plus a grace" || not_ok "status: protected" "$(jq -c .protection <<<"$st")"
vk a status p1 | grep -q '^protection: ok: a crash now loses [0-9]* s of work; the schedule promises at most [0-9]* s' \
    && ok "vmckpt status says it in words" || not_ok "vmckpt status says it in words" "$(vk a status p1)"
m=$(vk a metrics)
grep -q '^vmckpt_task_unprotected_seconds{task="p1"} [0-9.]*$' <<<"$m" && grep -q '^vmckpt_task_protection_promise_seconds{task="p1"} [1-9][0-9.]*$' <<<"$m" \
    && ok "metrics: the unprotected time and the promise" || not_ok "metrics: the unprotected time and the promise" "$(grep protect <<<"$m")"

# --- the automatic restart
S1=$(serial_of a p1)
wait_line "$S1" '^counter 2$' 90
pid=$(pid_of a p1)
kill -9 "$pid"
for _ in $(seq 1200); do
    st=$(vkp a --json status p1)
    [ "$(jq -r .state <<<"$st")" = running ] && [ "$(jq -r .pid <<<"$st")" != "$pid" ] && break
    sleep 0.1
done
from=$(vk a --json status p1 | jq -r .restore.from_seq)
[ "$(vk a --json status p1 | jq -r .state)" = running ] && ok "kill -9: restarted from checkpoint $from" || not_ok "kill -9: restarted" "$(vk a status p1)"
r=$(vk a --json status p1 | jq -c .restore)
[ "$(jq .local_bytes <<<"$r")" -gt 0 ] && [ "$(jq .store_bytes <<<"$r")" -lt "$(jq .local_bytes <<<"$r")" ] \
    && ok "the restart read the memory kept on this node, not the store" || not_ok "the restart read the kept memory" "$r"
committed_after a p1 "$from" && ok "after the automatic restart a checkpoint commits by itself ($took s)" \
    || not_ok "after the automatic restart a checkpoint commits by itself" "$(vk a status p1)"
echo "# restart to next checkpoint: $took s"

# --- the console logs of both runs
runs=$(vk a --json console p1 | jq -c '[.runs[] | [.run, .current]]')
[ "$runs" = '[[1,false],[2,true]]' ] && ok "console --list: run 1 (crashed, kept) and run 2 (current)" \
    || not_ok "console --list: runs 1 and 2" "$runs"
vk a console p1 --run 1 | tr -d '\r' | grep -aq '^counter 2$' && ok "the crashed run's console log reads back" \
    || not_ok "the crashed run's console log reads back" "$(vk a console p1 --run 1 2>&1 | tail -2)"
head -n1 "$(serial_of a p1)" | grep -q "^\[vmckpt .*\] task p1, run 2: restored from checkpoint $from (taken " \
    && ok "the restored run's log says which checkpoint it came from" || not_ok "the restored run's log names its checkpoint" "$(head -n1 "$(serial_of a p1)")"
[ -z "$(ls "$T/a/state/tasks/p1/run-1" | grep -v '^\(serial\|qemu\|fence\)\.log$')" ] && [ -e "$T/a/state/tasks/p1/run-1/serial.log" ] \
    && ok "the dead run's directory holds its logs only (its disk layers gone)" || not_ok "the dead run's directory holds its logs only" "$(ls "$T/a/state/tasks/p1/run-1")"

# --- an agent restart that adopts the running VM
stop_agent a
seq=$(cat "$T/a/state/tasks/p1/task.json" | jq -r .last_seq)
start_agent a && ok "agent a starts again" || not_ok "agent a starts again"
[ "$(vk a --json status p1 | jq -r .pid)" = "$(pid_of a p1)" ] && [ "$(vk a --json status p1 | jq -r .state)" = running ] \
    && ok "it adopted the running VM" || not_ok "it adopted the running VM" "$(vk a status p1)"
committed_after a p1 "$seq" && ok "after the adoption a checkpoint commits by itself ($took s)" \
    || not_ok "after the adoption a checkpoint commits by itself" "$(vk a status p1)"
echo "# adoption to next checkpoint: $took s"

# --- a damaged kept copy: the store is read instead
check "kill p1 (on purpose: no restart)" vk a kill p1
for _ in $(seq 600); do [ "$(vkp a --json status p1 | jq -c .checkpoint)" = null ] && break; sleep 0.1; done
KEPT=$T/a/state/tasks/p1/keep-memory.mig
[ -f "$KEPT" ] && ok "the newest checkpoint's memory is kept on the node" || not_ok "the newest checkpoint's memory is kept" "$(ls "$T/a/state/tasks/p1")"
flip_byte "$KEPT" 8192
check "restore p1 on a, its kept memory damaged" vk a restore p1
r=$(vk a --json status p1 | jq -c .restore)
[ "$(jq .local_bytes <<<"$r")" = 0 ] && [ "$(jq .store_bytes <<<"$r")" -gt 0 ] && grep -q 'kept on this node did not load' "$T/a/agent.log" \
    && ok "the damaged copy was not used: the store was read, and the log says why" || not_ok "the damaged copy was not used" "$r"
S=$(serial_of a p1)
wait_line "$S" '^counter [0-9]' 60
c=$(first_counter "$S")
wait_line "$S" "^counter $((c + 2))\$" 60 && ! grep -aq MISMATCH "$S" && ok "the restored guest counts on, disk matching memory" \
    || not_ok "the restored guest counts on" "$(tail -3 "$S")"

# --- rm keeps the logs; a restore on another agent checkpoints there
check "rm p1 on a" rm_task a p1
grep -q 'console logs stay' "$T/last.out" && ok "rm says the console logs stay" || not_ok "rm says the console logs stay" "$(cat "$T/last.out")"
[ "$(vk a --json console p1 | jq -c '[.runs[].run]')" = '[1,2,3]' ] && vk a console p1 | tr -d '\r' | grep -aq '^counter [0-9]' \
    && ok "after rm, the three runs' console logs read back" || not_ok "after rm, the console logs read back" "$(vk a --json console p1 2>&1)"
start_agent b && ok "agent b starts" || not_ok "agent b starts"
check "restore p1 on b" vk b restore p1
from=$(vk b --json status p1 | jq -r .restore.from_seq)
committed_after b p1 "$from" && ok "after a restore on another agent a checkpoint commits by itself ($took s)" \
    || not_ok "after a restore on another agent a checkpoint commits by itself" "$(vk b status p1)"
echo "# restore to next checkpoint: $took s"
check "rm --purge of a task removed before: its logs" vk a rm --purge p1
check_fails "its console logs are gone" "no console logs" vk a console p1 --list

# --- [task] log_expire_days: a removed task's logs go after that long
check "rm p1 on b" rm_task b p1
[ -d "$T/b/state/logs/p1" ] && ok "b keeps p1's logs" || not_ok "b keeps p1's logs" "$(ls "$T/b/state/logs")"
stop_agent b
start_agent b --set task.log_expire_days=0 && ok "agent b starts with log_expire_days 0" || not_ok "agent b starts again"
for _ in $(seq 50); do [ -d "$T/b/state/logs/p1" ] || break; sleep 0.1; done
[ ! -d "$T/b/state/logs/p1" ] && grep -q 'removed the console logs of 1 task' "$T/b/agent.log" \
    && ok "they expire, logged" || not_ok "the logs expire" "$(ls "$T/b/state/logs")"
stop_agent b
stop_agent a
finish
