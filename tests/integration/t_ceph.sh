#!/bin/bash
# The RADOS backend against a real Ceph cluster (scripts/ceph.sh: one monitor,
# three OSDs on 127.0.0.1): the store contract suite with 1 and 3 replicas
# (leases included), a cluster that goes away in the middle of a write, and a
# guest whose checkpoint upload loses an OSD: it still commits, restores, and
# a new checkpoint commits with the OSD still down.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CEPH=$T/ceph
MON_PORT=${VMCKPT_TEST_CEPH_PORT:-auto} # a free port
at_exit '"$ROOT/scripts/ceph.sh" stop "$CEPH" >/dev/null 2>&1'
uri() { "$ROOT/scripts/ceph.sh" uri "$CEPH" "$1" "$2"; }

t0=$(date +%s.%N)
if "$ROOT/scripts/ceph.sh" start "$CEPH" "$MON_PORT" > "$T/ceph.out" 2>&1; then
    ok "a Ceph cluster (1 monitor, 3 OSDs) starts in $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-4) s"
else
    not_ok "the Ceph cluster starts" "$(tail -5 "$T/ceph.out")"; finish; exit 1
fi
echo "# cluster memory (RSS, MiB): $(ps -o rss= -C ceph-osd,ceph-mon | awk '{s += $1} END {print int(s / 1024)}')"

for reps in 1 3; do
    U="$(uri "vk$reps" "$reps")&timeout=10"
    if VMCKPT_TEST_STORE="$U" CMOCKA_MESSAGE_OUTPUT=TAP "$BIN/tests/test_store" > "$T/c$reps.tap" 2>&1; then
        ok "rados, $reps replica(s): the store contract suite passes ($(grep -c '^ok' "$T/c$reps.tap") cases, leases included)"
    else
        not_ok "rados, $reps replica(s): the store contract suite" "$(grep -A3 '^not ok' "$T/c$reps.tap" | head -8)"
    fi
done
ceph -c "$CEPH/ceph.conf" osd pool get vk3 size | grep -q "size: 3" && ok "the pool of 3 replicas has size 3" \
    || not_ok "pool size 3" "$(ceph -c "$CEPH/ceph.conf" osd pool get vk3 size)"

# The cluster goes away in the middle of a write.
U="$(uri vk3 3)&timeout=5"
VMCKPT_TEST_PUT_PAUSE_MS=100 "$BIN/store_bench" putobj "$U" cut/obj 40 > "$T/cut.out" 2>&1 &
pid=$!
# certainly in the middle: 3 of 40 MiB written, at least 3.7 s of writing left
for _ in $(seq 600); do grep -q "^putobj: 3 MiB written" "$T/cut.out" && break; sleep 0.1; done
"$ROOT/scripts/ceph.sh" kill "$CEPH"
t0=$(date +%s)
if wait "$pid"; then not_ok "a write cut by the cluster going away fails" "it succeeded"
elif grep -q "cannot .* cut/obj" "$T/cut.out"; then ok "a write cut by the cluster going away fails within $(( $(date +%s) - t0 )) s, naming the object"
else not_ok "the cut write names the object" "$(cat "$T/cut.out")"; fi
check_fails "a cluster that is down gives a clear error in bounded time" "cannot connect to the Ceph cluster" \
    timeout 30 "$BIN/store_bench" stat "$U" cut/obj
"$ROOT/scripts/ceph.sh" start "$CEPH" > "$T/ceph2.out" 2>&1 && ok "the cluster starts again" || not_ok "the cluster starts again" "$(tail -3 "$T/ceph2.out")"
check_fails "nothing of the cut write is visible" "does not exist" "$BIN/store_bench" stat "$U" cut/obj
check "the write works once the cluster is back" "$BIN/store_bench" putobj "$U" cut/obj 40
[ "$("$BIN/store_bench" stat "$U" cut/obj)" = $((40 << 20)) ] && ok "and the object is whole" || not_ok "and the object is whole"

# A guest on the 3-replica pool; osd.2 is killed during a checkpoint's upload.
AGENT_ENV="$GATE_ENV"
start_agent a --store "$(uri vmckpt 3)" || { not_ok "agent starts on Ceph"; finish; exit 1; }
unset AGENT_ENV
check "run a counter task on Ceph" run_counter a c1 || { finish; exit 1; }
S=$(serial_of a c1)
wait_line "$S" '^counter 2$' 90
check "checkpoint 1 commits" vk a checkpoint c1
sleep 1
gate_close
check "checkpoint 2 starts" vk a checkpoint c1 --no-wait
gate_held c1 2 || not_ok "checkpoint 2's upload reaches the gate"
"$ROOT/scripts/ceph.sh" kill-osd "$CEPH" 2 && ok "osd.2 killed during the upload of checkpoint 2"
gate_open
for _ in $(seq 120); do vkp a ls c1 2>/dev/null | grep -q '^2 ' && break; sleep 0.5; done
vk a ls c1 | grep -q '^2 ' && ok "checkpoint 2 commits with one OSD down" || not_ok "checkpoint 2 commits with one OSD down" "$(vk a ls c1 2>&1 | tail -3)"
want=$(( $(counter_at a c1 2 "$S") + 1 ))
check "kill -9 of the VM" vk a kill c1
check "restore with the OSD still down" vk a restore c1
S2=$(serial_of a c1)
wait_line "$S2" '^counter [0-9]' 60
[ "$(first_counter "$S2")" = "$want" ] && ok "the guest resumes at counter $want" || not_ok "the guest resumes at counter $want" "$(got_counter "$S2")"
! grep -aq MISMATCH "$S2" && ok "disk matches memory" || not_ok "disk matches memory"
wait_line "$S2" "^counter $((want + 2))\$" 60
check "a new checkpoint commits with the OSD still down" vk a checkpoint c1
check "every checkpoint verifies" vk a verify c1
"$ROOT/scripts/ceph.sh" start-osd "$CEPH" 2 && ok "osd.2 starts again"
vk a rm c1 >/dev/null 2>&1
stop_agent a
finish
