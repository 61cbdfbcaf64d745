#!/bin/bash
# A task that runs long: the running VM's own chain of local overlays stays
# bounded ([data] max_local_chain), its committed layers merged while the VM
# runs; a checkpoint asked for during a merge waits for it (a merge gate
# makes the merge certainly under way); an agent restart and a restore
# follow the merged chain, and the counter guest's disk matches its memory.
. "$(dirname "$0")/lib.sh"

MGATE=$T/merge-gate
FREE=$T/free-mib # tests: the free space the agent sees in its state directory, in MiB
AGENT_ENV="VMCKPT_TEST_MERGE_GATE=$MGATE VMCKPT_TEST_FREE_MIB_FILE=$FREE"
SETS=(--set data.max_local_chain=4 --set data.max_chain=3)
start_agent a "${SETS[@]}" && ok "agent starts (max_local_chain 4)" || { not_ok "agent starts"; finish; exit 1; }
check "run a counter task" run_counter a c1 || { finish; exit 1; }
S1=$(serial_of a c1)
RUN=$(dirname "$S1")
wait_line "$S1" '^counter 3$' 90 && ok "guest boots and counts" || not_ok "guest boots and counts" "$(tail -3 "$S1")"

depth() { vkp a --json status c1 | jq -r .local_chain.depth; }
merges() { vkp a --json status c1 | jq -r .local_chain.merges; }
# settled: no merge running (a checkpoint taken now would not wait)
files() { compgen -G "$RUN/top-*.qcow2" | wc -l; }

max=0 bad=""
for i in $(seq 1 9); do
    vk a checkpoint c1 >"$T/last.out" 2>&1 || bad="$bad checkpoint $i failed: $(tail -1 "$T/last.out");"
    d=$(depth); [ "$d" -gt "$max" ] && max=$d
    # the layer files in the run directory are the chain: merged ones are gone
    for _ in $(seq 100); do [ "$(files)" = "$(depth)" ] && break; sleep 0.1; done
    [ "$(files)" = "$(depth)" ] || bad="$bad after $i: $(files) files, depth $(depth);"
done
[ -z "$bad" ] && ok "nine checkpoints commit, the chain's files are the chain" || not_ok "nine checkpoints" "$bad"
[ "$max" -le 4 ] && ok "the running chain stays at most 4 deep (max seen $max)" || not_ok "the running chain stays at most 4 deep" "max seen $max"
[ "$(merges)" -ge 2 ] && ok "committed layers were merged ($(merges) merges)" || not_ok "committed layers were merged" "merges $(merges)"
grep -q 'committed layers merged into' "$T/a/agent.log" && ok "the merge is logged" || not_ok "the merge is logged"

# A merge held at its gate: a checkpoint asked for meanwhile waits for it.
touch "$MGATE"
held=0
for i in 1 2 3; do
    vk a checkpoint c1 >/dev/null 2>&1
    for _ in $(seq 50); do [ -e "$MGATE.c1" ] && break; sleep 0.1; done
    [ -e "$MGATE.c1" ] && { held=1; break; }
done
[ "$held" = 1 ] && ok "a merge is held at its gate" || not_ok "a merge is held at its gate"
vk a checkpoint c1 >"$T/wait.out" 2>&1 &
cp_pid=$!
sleep 2
kill -0 "$cp_pid" 2>/dev/null && ok "a checkpoint asked for during the merge waits" || not_ok "a checkpoint asked for during the merge waits" "$(cat "$T/wait.out")"
rm -f "$MGATE"
wait "$cp_pid" && ok "it commits once the merge ends" || not_ok "it commits once the merge ends" "$(cat "$T/wait.out")"
[ "$(depth)" -le 4 ] && ok "still at most 4 deep ($(depth))" || not_ok "still at most 4 deep" "$(depth)"

# An agent restart takes back the VM with its merged chain.
d_before=$(depth)
stop_agent a
start_agent a "${SETS[@]}" && ok "agent restarts" || not_ok "agent restarts"
[ "$(depth)" = "$d_before" ] && ok "the adopted chain is the merged one ($d_before deep)" || not_ok "the adopted chain is the merged one" "now $(depth), was $d_before"
for i in 1 2 3; do check "checkpoint $i after the restart commits" vk a checkpoint c1; done
for _ in $(seq 100); do [ "$(files)" = "$(depth)" ] && break; sleep 0.1; done
[ "$(depth)" -le 4 ] && [ "$(files)" = "$(depth)" ] && ok "after the restart: at most 4 deep, files match ($(depth))" || not_ok "after the restart" "depth $(depth), files $(files)"
! grep -a MISMATCH "$S1" && ok "the running guest's disk matches its memory" || not_ok "the running guest's disk matches its memory" "$(grep -a MISMATCH "$S1" | head -2)"

# An agent killed -9 during a merge: QEMU ends the job on its own; the next
# agent waits for any merge still running and takes the chain from QEMU.
touch "$MGATE"
held=0
for i in 1 2 3 4; do
    vk a checkpoint c1 >/dev/null 2>&1
    for _ in $(seq 50); do [ -e "$MGATE.c1" ] && break; sleep 0.1; done
    [ -e "$MGATE.c1" ] && { held=1; break; }
done
[ "$held" = 1 ] && ok "a merge is under way (its job started in QEMU, the agent held at a gate)" || not_ok "a merge under way"
kill -9 "$AGENT_a"; wait "$AGENT_a" 2>/dev/null
rm -f "$MGATE" "$MGATE.c1"
start_agent a "${SETS[@]}" && ok "agent restarts after a kill -9 during the merge" || not_ok "agent restarts after a kill -9"
for _ in $(seq 100); do [ "$(files)" = "$(depth)" ] && break; sleep 0.1; done
[ "$(files)" = "$(depth)" ] && [ "$(depth)" -le 3 ] && ok "it took the merged chain from QEMU ($(depth) deep; merged-away files gone)" \
    || not_ok "the merged chain taken from QEMU" "depth $(depth), files $(files): $(ls "$RUN")"
check "a checkpoint after it commits" vk a checkpoint c1
! grep -a MISMATCH "$S1" && ok "the running guest's disk still matches its memory" || not_ok "disk matches memory after the merge"

# No room for the memory image: refused before the VM is touched.
seq0=$(vk a --json status c1 | jq -r .last_checkpoint.seq)
pid0=$(pid_of a c1)
echo 100 >"$FREE"
check_fails "a checkpoint with 100 MiB free is refused, saying why" "has 100 MiB free" vk a checkpoint c1
grep -q 'the VM was not touched' "$T/last.out" && ok "the refusal says the VM was not touched" || not_ok "the refusal says the VM was not touched" "$(cat "$T/last.out")"
[ "$(vk a --json status c1 | jq -r .state)" = running ] && [ "$(pid_of a c1)" = "$pid0" ]     && ok "the VM runs on, untouched" || not_ok "the VM runs on, untouched"
[ "$(vk a --json status c1 | jq -r .room_refusals)" = 1 ] && ok "status counts the refusal" || not_ok "status counts the refusal"
vk a metrics | grep -q '^vmckpt_checkpoints_refused_total{task="c1",reason="room"} 1$'     && ok "metrics count it" || not_ok "metrics count it" "$(vk a metrics | grep refused)"
! compgen -G "$RUN/memory-*" >/dev/null && ok "no memory image was begun" || not_ok "no memory image was begun" "$(ls "$RUN")"
rm -f "$FREE"
check "with room again, a checkpoint commits" vk a checkpoint c1
[ "$(vk a --json status c1 | jq -r .last_checkpoint.seq)" = $((seq0 + 1)) ]     && ok "it takes the next number ($((seq0 + 1))): the refused one used none" || not_ok "it takes the next number" "$(vk a --json status c1 | jq -r .last_checkpoint.seq)"

# The newest checkpoint restores: the merged layers held the right writes.
seq=$(vk a --json status c1 | jq -r .last_checkpoint.seq)
want=$(( $(counter_at a c1 "$seq" "$S1") + 1 ))
check "kill -9 of the VM" vk a kill c1
check "restore the newest checkpoint ($seq)" vk a restore c1
S=$(serial_of a c1)
wait_line "$S" '^counter [0-9]' 60
[ "$(first_counter "$S")" = "$want" ] && ok "it resumes at counter $want" || not_ok "it resumes at counter $want" "$(got_counter "$S")"
wait_line "$S" "^counter $((want + 2))\$" 60
! grep -a MISMATCH "$S" && ok "restored: disk matches memory" || not_ok "restored: disk matches memory" "$(grep -a MISMATCH "$S" | head -2)"

# [task] restart = on-crash (the default): QEMU killed behind the agent's
# back is restored from the newest checkpoint without a command.
check "a checkpoint of the restored task" vk a checkpoint c1
seq=$(vk a --json status c1 | jq -r .last_checkpoint.seq)
want=$(( $(counter_at a c1 "$seq" "$S") + 1 ))
pid=$(pid_of a c1)
t0=$(date +%s.%N)
kill -9 "$pid"
back=0
for _ in $(seq 1200); do
    st=$(vkp a --json status c1)
    if [ "$(echo "$st" | jq -r .state)" = running ] && [ "$(echo "$st" | jq -r .pid)" != "$pid" ]; then back=1; break; fi
    sleep 0.1
done
secs=$(echo "$(date +%s.%N) - $t0" | bc)
[ "$back" = 1 ] && ok "QEMU killed behind the agent's back runs again without a command (in $(printf '%.1f' "$secs") s)"     || not_ok "QEMU killed behind the agent's back runs again without a command" "$(vk a status c1)"
echo "# restart: $(printf '%.2f' "$secs") s from kill -9 to running"
[ "$(vk a --json status c1 | jq -r .restore.from_seq)" = "$seq" ] && ok "restarted from the newest checkpoint ($seq)" || not_ok "restarted from the newest checkpoint ($seq)" "$(vk a --json status c1 | jq -c .restore)"
[ "$(vk a --json status c1 | jq -r .restart.restarts)" = 1 ] && ok "status counts the restart" || not_ok "status counts the restart" "$(vk a --json status c1 | jq -c .restart)"
vk a status c1 | grep -q '^restart: on-crash; 1 restart(s)' && ok "vmckpt status shows it" || not_ok "vmckpt status shows it" "$(vk a status c1)"
vk a metrics | grep -q '^vmckpt_restarts_total{task="c1"} 1$' && ok "metrics count it" || not_ok "metrics count the restart" "$(vk a metrics | grep restarts)"
S=$(serial_of a c1)
wait_line "$S" '^counter [0-9]' 60
[ "$(first_counter "$S")" = "$want" ] && ok "the restarted guest resumes at counter $want" || not_ok "the restarted guest resumes at counter $want" "$(got_counter "$S")"
wait_line "$S" "^counter $((want + 2))\$" 60
! grep -a MISMATCH "$S" && ok "restarted: disk matches memory" || not_ok "restarted: disk matches memory"
grep -q 'restarted without a command' "$T/a/agent.log" && ok "the restart is logged" || not_ok "the restart is logged"
check "rm the task" vk a rm c1
stop_agent a

# restart_max = 1: the second crash within the window fails the task, with
# the reason; restart = never: a crash stays a crash.
start_agent b --set task.restart_max=1 && ok "agent b starts (restart_max 1)" || not_ok "agent b starts"
check "run a counter task on b" run_counter b r1
SB=$(serial_of b r1)
wait_line "$SB" '^counter 2$' 90
check "checkpoint on b" vk b checkpoint r1
kill -9 "$(pid_of b r1)"
for _ in $(seq 1200); do [ "$(vkp b --json status r1 | jq -r .restart.restarts)" = 1 ] && [ "$(vkp b --json status r1 | jq -r .state)" = running ] && break; sleep 0.1; done
[ "$(vk b --json status r1 | jq -r .state)" = running ] && ok "b: the first crash is restarted" || not_ok "b: the first crash is restarted" "$(vk b status r1)"
kill -9 "$(pid_of b r1)"
for _ in $(seq 300); do [ "$(vkp b --json status r1 | jq -r .state)" = failed ] && break; sleep 0.1; done
[ "$(vk b --json status r1 | jq -r .state)" = failed ] && ok "b: the second crash within the window fails the task" || not_ok "b: the second crash fails the task" "$(vk b status r1)"
vk b --json status r1 | jq -r .error | grep -q 'crashed 2 times within 600 s' && ok "b: status says why" || not_ok "b: status says why" "$(vk b --json status r1 | jq -r .error)"
check "b: a failed task can still be restored by hand" vk b restore r1
check "rm the task on b" vk b rm r1
stop_agent b
start_agent c --set task.restart=never --set task.mtbf=60 --set task.min_interval=1 \
    && ok "agent c starts (restart never, mtbf 60 s)" || not_ok "agent c starts"
# checkpoint_every = auto: the interval comes from the measured cost.
check_fails "--every takes a number or auto" "whole number" run_counter c bad --every sometimes
check "run a task with --every auto" run_counter c a1 --first 1 --every auto
for _ in $(seq 1200); do [ "$(vkp c --json status a1 | jq -r .interval.measured)" -ge 3 ] && break; sleep 0.1; done
st=$(vk c --json status a1)
[ "$(echo "$st" | jq -r .interval.measured)" -ge 3 ] && ok "auto: periodic checkpoints are taken ($(echo "$st" | jq -r .interval.measured))" || not_ok "auto: periodic checkpoints are taken" "$st"
echo "$st" | jq -r .interval.why | grep -q 'auto (Young/Daly): checkpoint cost [0-9.]* s .*MTBF 60 s' \
    && ok "auto: status says the interval and why: $(echo "$st" | jq -r .interval.why)" || not_ok "auto: status says why" "$(echo "$st" | jq -c .interval)"
[ "$(echo "$st" | jq -r .checkpoint_every)" = auto ] && [ "$(echo "$st" | jq -r .interval.seconds)" -ge 1 ] \
    && [ "$(echo "$st" | jq -r .interval.seconds)" -le 600 ] && ok "auto: within [min_interval, max_lost_work]" || not_ok "auto: bounds" "$(echo "$st" | jq -c .interval)"
vk c --json show a1 1 | grep -q '"every_s": -1' \
    && ok "auto: the manifest carries the policy (every_s -1)" || not_ok "auto: the manifest carries the policy" "$(vk c --json show a1 1 | head -c 400)"
check "rm the auto task (between its periodic checkpoints)" rm_task c a1
check "run a counter task on c" run_counter c n1
wait_line "$(serial_of c n1)" '^counter 2$' 90
check "checkpoint on c" vk c checkpoint n1
kill -9 "$(pid_of c n1)"
for _ in $(seq 300); do grep -q 'restart = never' "$T/c/agent.log" && break; sleep 0.1; done
grep -q 'not restarted: \[task\] restart = never' "$T/c/agent.log" && [ "$(vk c --json status n1 | jq -r .state)" = crashed ] \
    && ok "c: the crash is not restarted, and the log says why" || not_ok "c: the crash is not restarted" "$(vk c status n1)"
check "rm the task on c" vk c rm n1
stop_agent c
finish
