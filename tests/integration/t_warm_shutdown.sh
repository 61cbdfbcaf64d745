#!/bin/bash
# An agent asked to stop while a VM is being started ahead ([cluster]
# prestage_vm), just before its fetch reads the local copy of the packs
# (prestage's cache): the agent joins that thread before it frees the cache.
# Node b's start ahead is held by a gate there; the agent, told to stop, must
# wait for it. An agent that freed prestage first had the fetch race the
# freeing: ThreadSanitizer's report at shutdown (issue 27), so tests/tsan.sh
# runs this test too.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/cluster.sh"
LEASE=3000
RENEW=500
NS="vkt-$$"
CG=$T/warm-fetch-gate
make_ns a b || { not_ok "network namespaces of nodes a and b"; finish; exit 1; }
node a || { not_ok "node a starts"; finish; exit 1; }
touch "$CG"
AGENT_ENV="VMCKPT_TEST_WARM_FETCH_GATE=$CG" node b --set cluster.prestage_vm=1 || { not_ok "node b starts"; finish; exit 1; }
check "node a runs w1, one checkpoint after 2 s" run_counter a w1 --first 2 || { finish; exit 1; }
for _ in $(seq 1200); do [ -e "$CG.w1" ] && break; sleep 0.1; done
[ -e "$CG.w1" ] && ok "node b starts w1's VM ahead, its fetch of the staged packs held by a gate" \
    || { not_ok "node b's fetch from the cache held" "$(grep -a 'ahead\|staged' "$T/b/agent.log" | tail -3)"; finish; exit 1; }
kill -TERM "$AGENT_b"
# The agent frees what it can before it joins the start-ahead thread; give it
# the time to get there (an agent with the old order freed the cache here).
for _ in $(seq 30); do grep -q "stopping" "$T/b/agent.log" && break; sleep 0.1; done
sleep 2
kill -0 "$AGENT_b" 2>/dev/null && ok "told to stop, node b's agent waits for its fetch" \
    || not_ok "the agent waits for its start-ahead fetch" "$(tail -5 "$T/b/agent.log")"
# A second SIGTERM while it stops (a supervisor's, then its process group's):
# the handler never touches the agent being freed.
kill -TERM "$AGENT_b"
rm -f "$CG"
stop_agent b
stop_agent a
finish
