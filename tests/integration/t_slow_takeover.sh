#!/bin/bash
# Issue 12, finding 2: a take-over whose restore outlasts a lease must not
# stop the restoring node's lease renewals (before, the restore ran on the
# cluster thread, and a 4.3 s restore made node b's fence kill node b's own
# task). Node b's restore of node a's task is held at the restore gate for
# twice the lease; node b's own task runs on, unfenced, the same VM; then the
# taken-over task runs on node b.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/cluster.sh"
LEASE=3000
RENEW=500
NS="vkt-$$"
RG=$T/restore-gate
make_ns a b || { not_ok "network namespaces of nodes a and b"; finish; exit 1; }

node a || { not_ok "node a starts"; finish; exit 1; }
AGENT_ENV="VMCKPT_TEST_RESTORE_GATE=$RG" node b || { not_ok "node b starts"; finish; exit 1; }
check "node b runs its own task b1" run_counter b b1 || { finish; exit 1; }
check "node a runs a1" run_counter a a1 || { finish; exit 1; }
wait_line "$(serial_of a a1)" '^counter 2$' 90
check "checkpoint 1 of a1" vk a checkpoint a1
QB=$(pid_of b b1)
touch "$RG"
kill_node a
ok "node a killed"
for _ in $(seq 600); do [ -e "$RG.a1" ] && break; sleep 0.1; done
[ -e "$RG.a1" ] && ok "node b took a1 over; its restore is held (the gate)" || { not_ok "node b's take-over restore held" "$(tail -5 "$T/b/agent.log")"; finish; exit 1; }
sleep $((2 * LEASE / 1000)) # the restore now outlasts the lease twice over
alive "$QB" && [ "$(vk b --json status b1 | jq -r .state)" = running ] \
    && ok "node b's own task b1 runs on, the same VM, after twice the lease" \
    || not_ok "b1 is not fenced by the held restore" "$(grep -m3 "b1" "$T/b/agent.log" | tail -3)"
! grep -q "task b1: lease not renewed" "$T/b/agent.log" && ok "b1's lease was renewed throughout" \
    || not_ok "b1's lease renewed" "$(grep "lease not renewed" "$T/b/agent.log" | head -2)"
rm -f "$RG"
for _ in $(seq 600); do [ "$(vkp b --json status a1 2>/dev/null | jq -r .state)" = running ] && break; sleep 0.1; done
[ "$(vk b --json status a1 | jq -r .state)" = running ] && ok "then a1 runs on node b" || not_ok "a1 runs on node b" "$(tail -3 "$T/b/agent.log")"
[ "$(copies a1)" = 1 ] && [ "$(copies b1)" = 1 ] && ok "one copy of each" || not_ok "one copy of each" "a1 $(copies a1), b1 $(copies b1)"
vk b rm a1 >/dev/null 2>&1
vk b rm b1 >/dev/null 2>&1
stop_agent b
finish
