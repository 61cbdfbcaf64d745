#!/bin/bash
# Issue 12, finding 1: a node that stalls past its lease in the middle of an
# upload, and wakes up after another node took its task over, commits
# nothing; the new node's checkpoints go on (after the number it voided when
# it took the task over); the client reports only what its
# own agent committed. The stall comes at a certain point: the upload waits
# at the test's gate, and the agent is stopped (SIGSTOP) there. Then the same
# with the stall between the commit's lease check and its write: the store
# refuses the write (a fenced commit).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/cluster.sh"
LEASE=3000
RENEW=500
NS="vks-$$"
make_ns a b || { not_ok "network namespaces of nodes a and b"; finish; exit 1; }
M=$T/store/tasks/s1/manifests

AGENT_ENV="$GATE_ENV $CGATE_ENV $LGATE_ENV" node a || { not_ok "node a starts"; finish; exit 1; }
node b || { not_ok "node b starts"; finish; exit 1; }
check "node a runs a counter task" run_counter a s1 || { finish; exit 1; }
wait_line "$(serial_of a s1)" '^counter 2$' 90
check "checkpoint 1 on node a" vk a checkpoint s1
gate_close
check "checkpoint 2 on node a starts" vk a checkpoint s1 --no-wait
gate_held s1 2 && ok "its upload is held between its objects" || not_ok "its upload is held"
kill -STOP "$AGENT_a"
ok "node a's agent stopped (SIGSTOP) mid-upload"
if W=$(wait_where s1 b 60); then ok "node b took the task over ($W)"; else not_ok "node b takes the task over" "$(tail -5 "$T/b/agent.log")"; fi
[ "$(vk b --json status s1 | jq .restore.from_seq)" = 1 ] && ok "from checkpoint 1" || not_ok "from checkpoint 1" "$(vk b --json status s1 | jq -c .restore)"
kill -CONT "$AGENT_a"
gate_open
for _ in $(seq 600); do grep -q "checkpoint 2 failed" "$T/a/agent.log" && break; sleep 0.1; done
grep -q "checkpoint 2 failed.*lost the task's lease" "$T/a/agent.log" \
    && ok "node a, awake again, does not commit checkpoint 2: it lost the lease" \
    || not_ok "node a refuses its stale commit" "$(grep -m3 "s1" "$T/a/agent.log" | tail -3)" "$(ls "$M")"
[ ! -f "$M/0000000002.json" ] && ok "no manifest 2 from node a" || not_ok "node a committed manifest 2 after losing the lease"
[ -d "$M/0000000002.json" ] && ok "node b voided number 2 when it took the task over (a late write of node a's fails)" \
    || not_ok "number 2 voided" "$(ls -l "$M")"
check "node b's checkpoint commits" vk b checkpoint s1
grep -q "^checkpoint 3 of s1 committed" "$T/last.out" && [ -f "$M/0000000003.json" ] \
    && ok "it is number 3, and the client says so" || not_ok "node b's checkpoint is number 3" "$(cat "$T/last.out")" "$(ls "$M")"
check "and the next one too" vk b checkpoint s1
check "every checkpoint verifies" vk b verify s1
[ "$(copies s1)" = 1 ] && ok "one copy of s1 runs" || not_ok "one copy of s1 runs" "$(copies s1)"
vk b rm s1 >/dev/null 2>&1

# The stall falls between the lease check and the write.
stale_commit_case s2
vk b rm s2 >/dev/null 2>&1

# The stall falls inside the store's write, between its check of the proof
# and its link(2): the check passes, and only the take-over's void stops it.
check "node a runs s3" run_counter a s3
wait_line "$(serial_of a s3)" '^counter 2$' 90
check "checkpoint 1 of s3 on node a" vk a checkpoint s3
touch "$LGATE"
check "checkpoint 2 of s3 starts" vk a checkpoint s3 --no-wait
for _ in $(seq 1200); do [ -e "$LGATE.0000000002.json" ] && break; sleep 0.1; done
[ -e "$LGATE.0000000002.json" ] && ok "its proof is checked; the write stops before its link" || not_ok "held before the link"
kill -STOP "$AGENT_a"
if W=$(wait_where s3 b 60); then ok "$W took s3 over"; else not_ok "another node takes s3 over"; fi
kill -CONT "$AGENT_a"
rm -f "$LGATE"
for _ in $(seq 600); do grep -q "task s3: checkpoint 2 failed" "$T/a/agent.log" && break; sleep 0.1; done
grep -q "task s3: checkpoint 2 failed.*already exists" "$T/a/agent.log" \
    && ok "node a's link fails: the number was voided" || not_ok "node a's late link fails" "$(grep "task s3" "$T/a/agent.log" | tail -2)"
[ ! -f "$T/store/tasks/s3/manifests/0000000002.json" ] && ok "no manifest 2 of s3" || not_ok "no manifest 2 of s3"
check "node b checkpoints s3" vk b checkpoint s3
grep -q "^checkpoint 3 of s3 committed" "$T/last.out" && ok "as number 3" || not_ok "number 3" "$(cat "$T/last.out")"
check "every checkpoint of s3 verifies" vk b verify s3
[ "$(copies s3)" = 1 ] && ok "one copy of s3 runs" || not_ok "one copy of s3" "$(copies s3)"
stop_agent a
stop_agent b
finish
