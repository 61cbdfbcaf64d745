#!/bin/bash
# Issue 12: garbage collection on one node and uploads on another exclude each
# other through store leases (cluster/gc, cluster/uploads/<node>), not only
# through the grace period. Node a's upload held in flight (upload gate): node
# b's `gc --grace 0` waits for it, and the checkpoint commits whole. Node b's
# GC held in progress (GC gate): node a's next upload waits for it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/cluster.sh"
LEASE=3000
RENEW=500
NS="vkg-$$"
GCGATE=$T/gc-gate
make_ns a b || { not_ok "network namespaces of nodes a and b"; finish; exit 1; }
nck() { vkp a --json ls g1 | jq '.checkpoints | length'; }

AGENT_ENV="$GATE_ENV" node a || { not_ok "node a starts"; finish; exit 1; }
AGENT_ENV="VMCKPT_TEST_GC_BEGIN_GATE=$GCGATE" node b || { not_ok "node b starts"; finish; exit 1; }
check "node a runs a counter task" run_counter a g1 || { finish; exit 1; }
wait_line "$(serial_of a g1)" '^counter 2$' 90
check "checkpoint 1 on node a" vk a checkpoint g1

# --- a GC on node b while node a uploads --------------------------------------------
gate_close
check "checkpoint 2 on node a starts" vk a checkpoint g1 --no-wait
gate_held g1 2 && ok "its upload is held in flight" || not_ok "upload held"
vk b gc --grace 0 > "$T/gc1.out" 2>&1 &
gc=$!
for _ in $(seq 300); do grep -q "gc: waiting for the uploads in flight on node node-a" "$T/b/agent.log" && break; sleep 0.1; done
grep -q "gc: waiting for the uploads in flight on node node-a" "$T/b/agent.log" \
    && ok "node b's GC waits for node a's upload (logged)" || not_ok "node b's GC waits" "$(tail -3 "$T/b/agent.log")"
sleep 1
kill -0 "$gc" 2>/dev/null && ok "and has not finished while the upload is held" || not_ok "GC still waiting" "$(cat "$T/gc1.out")"
gate_open
wait "$gc" && ok "the GC finishes once the upload committed" || not_ok "GC finishes" "$(cat "$T/gc1.out")"
for _ in $(seq 300); do [ "$(nck)" = 2 ] && break; sleep 0.1; done
[ "$(nck)" = 2 ] && ok "checkpoint 2 committed" || not_ok "checkpoint 2 committed" "$(vk a ls g1)"
check "every checkpoint verifies (the GC deleted nothing they need)" vk a verify g1

# --- an upload on node a while node b collects -----------------------------------------
touch "$GCGATE"
vk b gc --grace 0 > "$T/gc2.out" 2>&1 &
gc=$!
for _ in $(seq 300); do [ -e "$GCGATE.gc" ] && break; sleep 0.1; done
[ -e "$GCGATE.gc" ] && ok "node b's GC is held in progress (it holds cluster/gc)" || not_ok "GC held"
check "checkpoint 3 on node a starts" vk a checkpoint g1 --no-wait
for _ in $(seq 300); do grep -q "upload waits: a garbage collection runs on another node" "$T/a/agent.log" && break; sleep 0.1; done
grep -q "upload waits: a garbage collection runs on another node" "$T/a/agent.log" \
    && ok "node a's upload waits for it (logged)" || not_ok "upload waits" "$(tail -3 "$T/a/agent.log")"
sleep 1
[ "$(nck)" = 2 ] && ok "and has not committed while the GC runs" || not_ok "not committed yet" "$(vk a ls g1)"
rm -f "$GCGATE"
wait "$gc" && ok "the GC finishes" || not_ok "GC finishes" "$(cat "$T/gc2.out")"
for _ in $(seq 600); do [ "$(nck)" = 3 ] && break; sleep 0.1; done
[ "$(nck)" = 3 ] && ok "then checkpoint 3 commits" || not_ok "checkpoint 3 commits" "$(vk a ls g1)"
check "every checkpoint verifies" vk a verify g1

# --- issue 29, finding 4 (b): forged heartbeats. /dev/zero in one's place,
# and one of 20 MiB listing 2 million task ids (its like took an agent to
# 357 MiB and stalled `vmckpt nodes`): both are ignored, and nodes answer.
rss() { awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$1/status"; }
rss0=$(rss "$AGENT_a")
ln -s /dev/zero "$T/store/cluster/nodes/evil"
{ printf '{"node":"huge","renewed_ms":%s,"lease_ms":600000,"renew_ms":500,"tasks":[' "$(date +%s%3N)"
  seq 1 2000000 | sed 's/.*/"t&",/'; echo '"t0"]}'; } > "$T/store/cluster/nodes/.huge" \
    && mv "$T/store/cluster/nodes/.huge" "$T/store/cluster/nodes/huge"
check "nodes answers beside them (within 10 s)" timeout 10 "$REL_CLIENT" --socket "$T/a/state/vmckptd.sock" nodes
vkp a --json nodes > "$T/nodes.json"
[ "$(jq -r '[.nodes[].node] | sort | join(" ")' "$T/nodes.json")" = "node-a node-b" ] \
    && ok "only the two real nodes are listed" || not_ok "only the real nodes" "$(jq -c '[.nodes[].node]' "$T/nodes.json")"
for _ in 1 2 3; do vkp a nodes >/dev/null; sleep 0.5; done # (and the renewals read them too)
rss1=$(rss "$AGENT_a")
[ $((rss1 - rss0)) -lt 100 ] && ok "node a's memory did not grow by their size ($rss0 -> $rss1 MiB)" \
    || not_ok "node a's memory grew" "$rss0 -> $rss1 MiB"
rm -f "$T/store/cluster/nodes/evil" "$T/store/cluster/nodes/huge"
vk a rm g1 >/dev/null 2>&1
stop_agent a
stop_agent b
finish
