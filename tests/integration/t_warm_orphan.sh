#!/bin/bash
# A VM started ahead ([cluster] prestage_vm) whose agent is killed after its
# QEMU started but before its pid was noted in warm.json: the next agent ends
# that QEMU too (found by its run directory in its arguments), so it is never
# left running unnoted (t_failover once counted such a VM as a second copy of
# its task). Node b's start ahead is held at that instant by a gate.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/cluster.sh"
LEASE=3000
RENEW=500
NS="vkt-$$"
WG=$T/warm-gate
make_ns a b || { not_ok "network namespaces of nodes a and b"; finish; exit 1; }
node a || { not_ok "node a starts"; finish; exit 1; }
touch "$WG"
AGENT_ENV="VMCKPT_TEST_WARM_GATE=$WG" node b --set cluster.prestage_vm=1 || { not_ok "node b starts"; finish; exit 1; }
check "node a runs w1, a checkpoint every 2 s" run_counter a w1 --every 2 || { finish; exit 1; }
for _ in $(seq 600); do [ -e "$WG.w1" ] && break; sleep 0.1; done
[ -e "$WG.w1" ] && ok "node b started w1's VM ahead and is held before noting its pid (the gate)" \
    || { not_ok "node b's start ahead held" "$(grep -a ahead "$T/b/agent.log" | tail -3)"; finish; exit 1; }
Q=$(vm_list | grep -- "$T/b/state/tasks/w1/run-" | awk '{print $1}' | head -n1)
[ -n "$Q" ] && jq -e '.pid == 0' "$T/b/state/tasks/w1/warm.json" >/dev/null \
    && ok "its QEMU runs (pid $Q); warm.json does not name it yet" \
    || not_ok "a QEMU not yet noted" "pid '$Q', $(cat "$T/b/state/tasks/w1/warm.json" 2>&1)"
kill -9 "$AGENT_b"; wait "$AGENT_b" 2>/dev/null
rm -f "$WG"
alive "$Q" && ok "node b's agent killed there; the QEMU it started runs on" || not_ok "the QEMU outlives its agent"
node b --set cluster.prestage_vm=0 && ok "node b's agent starts again (no VMs ahead)" || not_ok "node b restarts"
for _ in $(seq 50); do alive "$Q" || break; sleep 0.1; done
! alive "$Q" && ok "the QEMU its predecessor started ahead and never noted is ended" \
    || not_ok "the unnoted QEMU is ended" "$(ps -o pid,stat,args -p "$Q" | cut -c1-200)"
[ ! -e "$T/b/state/tasks/w1" ] && ok "and w1's directory on node b is removed" || not_ok "w1's directory removed" "$(ls -la "$T/b/state/tasks/w1")"
grep -q "removed the VM started ahead by an earlier agent" "$T/b/agent.log" && ok "the removal is logged" || not_ok "removal logged"
[ "$(copies w1)" = 1 ] && ok "one copy of w1 runs (node a's)" || not_ok "one copy of w1" "$(copies w1)"
for x in a b; do stop_agent "$x"; done
finish
