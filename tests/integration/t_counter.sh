#!/bin/bash
# Three checkpoints of the counter guest, kill -9 of QEMU, restore from each
# checkpoint into a fresh run directory (and once on a second agent that only
# shares the store), checking that memory and disk agree every time.
. "$(dirname "$0")/lib.sh"

start_agent a && ok "agent starts" || { not_ok "agent starts"; finish; exit 1; }
check "run a counter task" run_counter a c1 || { finish; exit 1; }
S1=$(serial_of a c1)
wait_line "$S1" '^counter 3$' 90 && ok "guest boots and counts" || not_ok "guest boots and counts" "$(tail -3 "$S1")"
# No schedule (no --every, the default): said everywhere, never silent.
[ "$(vk a --json status c1 | jq -r .protection.state)" = unscheduled ] && ok "status: no checkpoint schedule" \
    || not_ok "status: no checkpoint schedule" "$(vk a --json status c1 | jq -c .protection)"
vk a status c1 | grep -q '^protection: NONE: no checkpoint is scheduled' && vk a status | grep -q '^c1 .* NO SCHEDULE' \
    && ok "vmckpt status says it, in the table and for the task" || not_ok "vmckpt status says there is no schedule" "$(vk a status; vk a status c1)"
vk a metrics | grep -q '^vmckpt_tasks_unprotected 1$' && vk a metrics | grep -q '^vmckpt_task_protection_promise_seconds{task="c1"} 0.000$' \
    && ok "metrics count it unprotected, with no promise" || not_ok "metrics count it unprotected" "$(vk a metrics | grep protect)"

# After each checkpoint, wait until the guest has counted on past it (so the
# checkpoints are at different counters however slow the machine is).
for i in 1 2 3; do
    check "checkpoint $i commits" vk a checkpoint c1
    at=$(counter_at a c1 "$i" "$S1")
    wait_line "$S1" "^counter $((at + 2))\$" 60 || not_ok "the guest counts on after checkpoint $i" "stuck at $(last_counter "$S1")"
done
check "vmckpt ls lists the checkpoints" vk a ls c1
[ "$(grep -c '^[123] ' "$T/last.out")" = 3 ] && ok "three checkpoints listed" || not_ok "three checkpoints listed" "$(cat "$T/last.out")"
check "vmckpt verify: all intact" vk a verify c1

declare -A want
for i in 1 2 3; do want[$i]=$(( $(counter_at a c1 $i "$S1") + 1 )); done
echo "# counter values expected after restore: ${want[1]} ${want[2]} ${want[3]}"
[ "${want[1]}" -lt "${want[2]}" ] && [ "${want[2]}" -lt "${want[3]}" ] && ok "checkpoints taken at increasing counter values" || not_ok "checkpoints taken at increasing counter values"

last_before=$(last_counter "$S1")
check "kill -9 of the VM" vk a kill c1
vk a status c1 | grep -q crashed && ok "task shows as crashed" || not_ok "task shows as crashed"

for i in 1 2 3; do
    check "restore from checkpoint $i" vk a restore c1 --checkpoint $i
    S=$(serial_of a c1)
    [ "$S" != "$S1" ] && ok "restore $i runs in a fresh run directory" || not_ok "restore $i runs in a fresh run directory"
    if wait_line "$S" '^counter [0-9]' 30; then
        got=$(first_counter "$S")
        [ "$got" = "${want[$i]}" ] && ok "restore $i resumes at counter ${want[$i]}" \
            || not_ok "restore $i resumes at counter ${want[$i]}" "got $got" "$(head -3 "$S")"
    else
        not_ok "restore $i resumes at counter ${want[$i]}" "no counter output" "$(tail -3 "$S")"
    fi
    wait_line "$S" "^counter $((want[$i] + 3))\$" 60 && ok "restore $i keeps counting" || not_ok "restore $i keeps counting"
    ! grep -a MISMATCH "$S" && ok "restore $i: disk matches memory" || not_ok "restore $i: disk matches memory" "$(grep -a MISMATCH "$S" | head -2)"
    check "kill after restore $i" vk a kill c1
done
[ "$last_before" -gt "${want[3]}" ] && ok "the crash lost only the work after the last checkpoint" || not_ok "crash check" "last before kill $last_before, want3 ${want[3]}"

# Another node that sees the same store restores the newest checkpoint.
start_agent b && ok "second agent (other node) starts" || not_ok "second agent starts"
check "restore on the second agent" vk b restore c1
S=$(serial_of b c1)
wait_line "$S" '^counter [0-9]' 60
[ "$(first_counter "$S")" = "${want[3]}" ] && ok "second node resumes at counter ${want[3]}" || not_ok "second node resumes at counter ${want[3]}" "$(got_counter "$S")"
wait_line "$S" "^counter $((want[3] + 2))\$" 60
! grep -a MISMATCH "$S" && ok "second node: disk matches memory" || not_ok "second node: disk matches memory"
# It keeps checkpointing: the new checkpoint follows the old chain.
check "checkpoint after restore commits" vk b checkpoint c1
check "checkpoint after restore is listed as 4" bash -c "$BIN/vmckpt --socket $T/b/state/vmckptd.sock ls c1 | grep -q '^4 '"
check "rm the task on the second agent" vk b rm c1
stop_agent b
stop_agent a
finish
