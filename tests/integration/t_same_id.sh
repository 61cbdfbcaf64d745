#!/bin/bash
# Issue 12, finding 5: two requests for one task id at once (two runs, two
# restores) start one VM, whatever their timing: the id is reserved with the
# check that it is free. Also finding 3's other half: a node named like a
# host's full name (dots) is seen by the others.
. "$(dirname "$0")/lib.sh"

qemus_of() { pgrep -f "$T/a/state/tasks/$1/run-.*qmp.sock" | wc -l; }
start_agent a || { not_ok "agent starts"; finish; exit 1; }

run_counter a s1 >"$T/r1.out" 2>&1 &
p1=$!
run_counter a s1 >"$T/r2.out" 2>&1 &
p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
[ $((r1 + r2)) -gt 0 ] && [ "$r1" -eq 0 -o "$r2" -eq 0 ] && ok "two runs of one id at once: exactly one succeeds" \
    || not_ok "two runs of one id at once: exactly one succeeds" "exit codes $r1 $r2" "$(cat "$T/r1.out" "$T/r2.out")"
cat "$T/r1.out" "$T/r2.out" | grep -q "already exists on this node, or is being started" \
    && ok "the other is told why" || not_ok "the other is told why" "$(cat "$T/r1.out" "$T/r2.out")"
[ "$(qemus_of s1)" = 1 ] && ok "one QEMU runs for the task" || not_ok "one QEMU runs for the task" "$(qemus_of s1) found"
S=$(serial_of a s1)
wait_line "$S" '^counter 2$' 90
check "checkpoint 1" vk a checkpoint s1
check "rm the task here (its checkpoint stays in the store)" vk a rm s1
for _ in $(seq 100); do [ "$(qemus_of s1)" = 0 ] && break; sleep 0.1; done

vk a restore s1 >"$T/x1.out" 2>&1 &
p1=$!
vk a restore s1 >"$T/x2.out" 2>&1 &
p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
[ $((r1 + r2)) -gt 0 ] && [ "$r1" -eq 0 -o "$r2" -eq 0 ] && ok "two restores of one id at once: exactly one succeeds" \
    || not_ok "two restores of one id at once: exactly one succeeds" "exit codes $r1 $r2" "$(cat "$T/x1.out" "$T/x2.out")"
[ "$(qemus_of s1)" = 1 ] && ok "one QEMU runs for the restored task" || not_ok "one QEMU runs for the restored task" "$(qemus_of s1) found"
check "rm it" vk a rm s1
stop_agent a

# A node named like a fully qualified host name is listed by its peers.
start_agent n1 --set cluster.enabled=1 --set cluster.node=n1.dc1.example.com --set cluster.lease_ms=3000 --set cluster.renew_ms=500
start_agent n2 --set cluster.enabled=1 --set cluster.node=n2 --set cluster.lease_ms=3000 --set cluster.renew_ms=500
for _ in $(seq 100); do vk n2 nodes 2>/dev/null | grep -q "^n1.dc1.example.com .*alive" && break; sleep 0.1; done
vk n2 nodes | grep -q "^n1.dc1.example.com .*alive" && ok "a node whose name has dots is seen alive by the others" \
    || not_ok "a node whose name has dots is seen alive by the others" "$(vk n2 nodes)"
check_fails "a node name with '.tmp-' is refused (stores mark temporary objects so)" "not a valid name" \
    "$BIN/vmckptd" --state-dir "$T/x" --set cluster.node=a.tmp-b
stop_agent n1
stop_agent n2
finish
