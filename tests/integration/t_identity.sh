#!/bin/bash
# Issue 12, findings 3, 5 and part of 6: who is who. Two requests for one
# task id at once (two runs, two restores) start one VM, whatever their
# timing: the id is reserved with the check that it is free. A node named
# like a host's full name (dots) is seen by the others. An agent does not
# take another live agent's socket. A fence process is known by its pid and
# start time, so a damaged fence.pid gets the VM a new fence.
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

# An agent on another state directory pointed at a's socket: refused, a unharmed.
check_fails "a second agent does not take a live agent's socket" "in use: another vmckptd" \
    "$BIN/vmckptd" --state-dir "$T/other" --socket "$T/a/state/vmckptd.sock"
check "the first agent still answers on it" vk a status
stop_agent a
touch "$T/not-a-socket"
check_fails "a socket path that is a file is not removed" "is not a socket" \
    "$BIN/vmckptd" --state-dir "$T/other" --socket "$T/not-a-socket"
[ -f "$T/not-a-socket" ] && ok "the file at the socket path is kept" || not_ok "the file at the socket path is kept"

# A node named like a fully qualified host name is listed by its peers.
start_agent n1 --set cluster.enabled=1 --set cluster.node=n1.dc1.example.com --set cluster.lease_ms=10000 --set cluster.renew_ms=1000
start_agent n2 --set cluster.enabled=1 --set cluster.node=n2 --set cluster.lease_ms=10000 --set cluster.renew_ms=1000
for _ in $(seq 600); do vkp n2 nodes 2>/dev/null | grep -q "^n1.dc1.example.com .*alive" && break; sleep 0.1; done
vk n2 nodes | grep -q "^n1.dc1.example.com .*alive" && ok "a node whose name has dots is seen alive by the others" \
    || not_ok "a node whose name has dots is seen alive by the others" "$(vk n2 nodes)"
check_fails "a node name with '.tmp-' is refused (stores mark temporary objects so)" "not a valid name" \
    "$BIN/vmckptd" --state-dir "$T/x" --set cluster.node=a.tmp-b

# A fence process whose fence.pid is emptied (it was kill(0, 0): "runs") is
# replaced at the next renewal.
check "run a task on the cluster node" run_counter n1 f1
RD=$(vk n1 --json status f1 | jq -r .run_dir)
for _ in $(seq 600); do [ -s "$RD/fence.pid" ] && break; sleep 0.1; done
read -r fpid _ < "$RD/fence.pid"
kill -9 "$fpid"; : > "$RD/fence.pid"
for _ in $(seq 600); do [ -s "$RD/fence.pid" ] && break; sleep 0.1; done
read -r npid nstart < "$RD/fence.pid"
[ -n "${npid:-}" ] && [ "$npid" != "$fpid" ] && kill -0 "$npid" 2>/dev/null && ok "a new fence process watches the VM" \
    || not_ok "a new fence process watches the VM" "fence.pid: $(cat "$RD/fence.pid")"
[ "$nstart" = "$(awk '{sub(/.*\) /, ""); print $20}' "/proc/$npid/stat")" ] && ok "fence.pid names it with its start time" \
    || not_ok "fence.pid names it with its start time" "$(cat "$RD/fence.pid")"
check "rm the task" vk n1 rm f1
stop_agent n1
stop_agent n2
finish
