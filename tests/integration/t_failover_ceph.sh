#!/bin/bash
# Fail-over on a Ceph store. The cluster (1 monitor, 3 OSDs) runs in a network
# namespace of its own, on a bridge; each of the nodes a, b, c is a namespace
# of its own with one agent, linked to that bridge by a veth pair (all made
# here). A node killed with everything in it: its task resumes on another node
# from its newest checkpoint, consistent. A node whose link is cut (it keeps
# running): it kills its VM before its lease expires, the task resumes
# elsewhere, and two copies never run at once. A node that stalls between the
# lease check of a commit and its write, and wakes after another node took
# its task over, is blocklisted by that node: its write fails.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/cluster.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LEASE=4000
RENEW=500
NS="vkc-$$"
SUB=10.78.$(( $$ % 200 + 20 ))
CEPH=$T/ceph
cleanup_all() {
    VMCKPT_CEPH_NETNS="$NS-ceph" "$ROOT/scripts/ceph.sh" kill "$CEPH" 2>/dev/null
    for x in a b c ceph; do ip netns pids "$NS-$x" 2>/dev/null | xargs -r kill -9; ip netns del "$NS-$x" 2>/dev/null; done
}
at_exit cleanup_all

ip netns add "$NS-ceph" && ip -n "$NS-ceph" link set lo up &&
    ip -n "$NS-ceph" link add br0 type bridge && ip -n "$NS-ceph" addr add "$SUB.1/24" dev br0 &&
    ip -n "$NS-ceph" link set br0 up || { not_ok "the storage namespace and its bridge"; finish; exit 1; }
i=10
for x in a b c; do
    i=$((i + 1))
    ip netns add "$NS-$x" && ip -n "$NS-$x" link set lo up &&
        ip link add "vk$$$x" type veth peer name "vp$$$x" &&
        ip link set "vk$$$x" netns "$NS-$x" && ip link set "vp$$$x" netns "$NS-ceph" &&
        ip -n "$NS-$x" link set "vk$$$x" name eth0 && ip -n "$NS-$x" addr add "$SUB.$i/24" dev eth0 &&
        ip -n "$NS-$x" link set eth0 up && ip -n "$NS-ceph" link set "vp$$$x" master br0 &&
        ip -n "$NS-ceph" link set "vp$$$x" up || { not_ok "namespace of node $x"; finish; exit 1; }
done

export VMCKPT_CEPH_NETNS="$NS-ceph" VMCKPT_CEPH_ADDR="$SUB.1" VMCKPT_CEPH_NET="$SUB.0/24"
"$ROOT/scripts/ceph.sh" start "$CEPH" 33600 > "$T/ceph.out" 2>&1 && ok "Ceph runs in the storage namespace on $SUB.1" \
    || { not_ok "Ceph starts" "$(tail -15 "$T/ceph.out")"; finish; exit 1; }
for x in a b c; do
    ip netns exec "$NS-$x" timeout 5 bash -c "exec 3<>/dev/tcp/$SUB.1/33600" || { not_ok "node $x reaches the monitor"; finish; exit 1; }
done
ok "nodes a, b, c reach the monitor over their links"
NODE_ARGS="--store $("$ROOT/scripts/ceph.sh" uri "$CEPH" vmckpt 3)&timeout=10"
AGENT_ENV="$CGATE_ENV" start_nodes || { finish; exit 1; }

# --- node a stalls between the lease check of a commit and its write ------------------
stale_commit_case s3

# --- kill -9 of node a --------------------------------------------------------------
counting_task a c1 || { finish; exit 1; }
S=$(serial_of a c1)
last=$(vk a --json ls c1 | jq ".checkpoints[-1].seq")
t0=$(date +%s%N)
kill_node a
if W=$(wait_where c1 b 40); then
    dt=$(( ($(date +%s%N) - t0) / 1000000 ))
    ok "c1 resumes on $W, $dt ms after node a was killed (lease $LEASE ms)"
else
    not_ok "c1 resumes on another node" "$(tail -5 "$T/b/agent.log")"; finish; exit 1
fi
w=${W#node-}
resumed_consistently "$w" c1 "$last" "$S"

# --- node b's link is cut ---------------------------------------------------------
check "node b runs p1" run_counter b p1 --every 2
for _ in $(seq 300); do [ "$(vkp b --json ls p1 | jq ".checkpoints | length")" -ge 1 ] && break; sleep 0.2; done
QB=$(pid_of b p1)
ip -n "$NS-b" link set eth0 down
watch_fence p1 "$QB" 50
# (how soon is a figure of bench/failover.sh: here, that it happens, and before any other copy runs)
[ -n "$fenced" ] && ok "node b, cut off, kills its VM ($fenced ms after the cut; lease $LEASE ms)" \
    || not_ok "node b fences its VM" "not fenced"
[ -n "$resumed" ] && ok "p1 resumes on another node ($resumed ms after the cut)" || not_ok "p1 resumes elsewhere" "$(vk c nodes)"
[ "$max" -le 1 ] && ok "never two copies of p1 at once" || not_ok "never two copies" "saw $max"
ip -n "$NS-b" link set eth0 up
for x in b c; do stop_agent "$x"; done
finish
