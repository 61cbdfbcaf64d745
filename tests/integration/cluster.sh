# Helpers of the fail-over tests (sourced after lib.sh): agents of nodes a, b,
# c in the network namespaces $NS-a, $NS-b, $NS-c, in cluster mode with
# $LEASE / $RENEW.
node() { # node NAME [extra vmckptd args]: the agent of node NAME in its namespace
    local x=$1; shift
    AGENT_NETNS="$NS-$x" start_agent "$x" --set cluster.enabled=1 --set "cluster.node=node-$x" \
        --set "cluster.lease_ms=$LEASE" --set "cluster.renew_ms=$RENEW" ${NODE_ARGS:-} "$@"
}
kill_node() { ip netns pids "$NS-$1" | xargs -r kill -9; } # the node and its VMs, as a crash
where() { # the node whose agent runs task $1 (per the cluster view of agent $2)
    vk "$2" --json nodes | jq -r --arg t "$1" '.nodes[] | select(.state == "alive" and (.tasks | index($t))) | .node' | head -n1
}
wait_where() { # wait_where TASK VIEW SECONDS: prints the node once one runs it, not node-a
    local w
    for _ in $(seq $(($3 * 10))); do
        w=$(where "$1" "$2")
        [ -n "$w" ] && [ "$w" != node-a ] && { echo "$w"; return 0; }
        sleep 0.1
    done
    return 1
}
copies() { pgrep -f "qemu-system.*/tasks/$1/run-" | wc -l; } # VMs of task $1, on any node
alive() { [ -e "/proc/$1" ] && ! grep -q '^[^)]*) Z' "/proc/$1/stat" 2>/dev/null; } # (a zombie is dead)

