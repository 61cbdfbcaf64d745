#!/bin/bash
# A store that fails every few writes and reads: checkpoints still commit
# (failed writes are retried with back-off and counted), restores still work.
. "$(dirname "$0")/lib.sh"

AGENT_ENV="VMCKPT_FAULT_WRITE_EVERY=9 VMCKPT_FAULT_READ_EVERY=11"
start_agent a --store "fault://file://$T/store" || { not_ok "agent starts on a faulty store"; finish; exit 1; }
ok "agent starts on a faulty store"
check "run a counter task" run_counter a f1 || { finish; exit 1; }
S=$(serial_of a f1)
wait_line "$S" '^counter 2$' 90
check "checkpoint 1 commits despite write faults" vk a checkpoint f1
check "checkpoint 2 commits despite write faults" vk a checkpoint f1
r=$(jq '.data.stored.retries' "$T/store/tasks/f1/manifests/0000000001.json")
[ "$r" -gt 0 ] && ok "failed writes were retried ($r retries recorded in the manifest)" || not_ok "retries recorded" "$r"
grep -q "injected write fault" "$T/a/agent.log" && ok "each failure is logged with its cause" || not_ok "failures logged"
check "verify despite read faults" vk a verify f1
check "kill" vk a kill f1
want=$(( $(counter_at a f1 2 "$S") + 1 ))
check "restore despite read faults" vk a restore f1
S2=$(serial_of a f1)
wait_line "$S2" '^counter [0-9]' 60
[ "$(first_counter "$S2")" = "$want" ] && ok "restored at $want" || not_ok "restored at $want" "$(got_counter "$S2")"
unset AGENT_ENV
stop_agent a
finish
