# Helpers of the fail-over tests (sourced after lib.sh): agents of nodes a, b,
# c in the network namespaces $NS-a, $NS-b, $NS-c, in cluster mode with
# $LEASE / $RENEW.
node() { # node NAME [extra vmckptd args]: the agent of node NAME in its namespace
    local x=$1; shift
    AGENT_NETNS="$NS-$x" start_agent "$x" --set cluster.enabled=1 --set "cluster.node=node-$x" \
        --set "cluster.lease_ms=$LEASE" --set "cluster.renew_ms=$RENEW" ${NODE_ARGS:-} "$@"
}
make_ns() { # make_ns NODE...: the namespace $NS-NODE of each (lo up), emptied and removed at exit
    local x
    for x in "$@"; do ip netns add "$NS-$x" && ip -n "$NS-$x" link set lo up || return 1; done
    at_exit "for x in $*; do ip netns pids \"\$NS-\$x\" 2>/dev/null | xargs -r kill -9; ip netns del \"\$NS-\$x\" 2>/dev/null; done"
}
kill_node() { ip netns pids "$NS-$1" | xargs -r kill -9; } # the node and its VMs, as a crash
where() { # the node whose agent runs task $1 (per the cluster view of agent $2)
    vkp "$2" --json nodes | jq -r --arg t "$1" '.nodes[] | select(.state == "alive" and (.tasks | index($t))) | .node' | head -n1
}
wait_where() { # wait_where TASK VIEW SECONDS: prints the node once one runs it, not node-a
    local w
    for _ in $(seq $(($3 * 4))); do
        w=$(where "$1" "$2")
        # (a node's heartbeat names a task from its take-over on, before it runs)
        [ -n "$w" ] && [ "$w" != node-a ] && [ "$(vkp "${w#node-}" --json status "$1" 2>/dev/null | jq -r .state)" = running ] \
            && { echo "$w"; return 0; }
        sleep 0.25
    done
    return 1
}
# The QEMU VMs ("PID PPID COMM ARGS"): processes named qemu-system-*, but not
# the child a QEMU forks for an `exec:` migration (each checkpoint's `cat`),
# which has its parent's name and command line until it execs.
vm_list() {
    ps -eo pid=,ppid=,comm=,args= | awk '$3 ~ /^qemu-system/ { l[$1] = $0; pp[$1] = $2 }
        END { for (p in l) if (!(pp[p] in l)) print l[p] }'
}
# The QEMU processes (named qemu-system-*, zombies left out) into QP (their
# pids), QP_PPID and QP_ARGS (the command line, its arguments joined by
# spaces). Bash builtins only: the samplers (watch_fence, the campaign's
# checker) call it ten times a second, and a ps of every process plus an awk
# cost ~30 ms of CPU a sample against ~6.
declare -a QP=()
declare -A QP_PPID=() QP_ARGS=()
qemu_scan() {
    local f c p st a
    QP=(); QP_PPID=(); QP_ARGS=()
    for f in /proc/[0-9]*/comm; do
        { read -r c < "$f"; } 2>/dev/null || continue
        [[ $c == qemu-system* ]] || continue
        p=${f#/proc/}; p=${p%/comm}
        { read -r st < "/proc/$p/stat"; } 2>/dev/null || continue
        st=(${st##*) }) # state ppid ...
        { mapfile -d '' a < "/proc/$p/cmdline"; } 2>/dev/null || continue
        [ ${#a[@]} -gt 0 ] || continue # (a zombie has no command line)
        QP+=("$p"); QP_PPID[$p]=${st[1]}; QP_ARGS[$p]="${a[*]}"
    done
}
# The run directories of task $1's VMs on any node of this test, one a line,
# each once; not the child a QEMU forks for an `exec:` migration (its parent
# is a QEMU too).
vm_runs() {
    local p r re="$T/[^ ]*/tasks/$1/run-[0-9]*"
    local -A seen=()
    qemu_scan
    for p in "${QP[@]}"; do
        [ -n "${QP_PPID[${QP_PPID[$p]}]+x}" ] && continue
        [[ ${QP_ARGS[$p]} =~ $re ]] || continue
        r=${BASH_REMATCH[0]}
        [ -n "${seen[$r]+x}" ] && continue
        seen[$r]=1; echo "$r"
    done
}
# VMs of task $1 on any node of this test; a VM a successor started ahead
# (paused, waiting for its memory; its task directory has warm.json) is none.
# The markers are read before and after the process list: one is written
# before its QEMU starts and removed after it ends (or when it becomes the
# task's), so a VM started ahead is seen with its marker in one of the two.
# (Sampled ten times a second by watch_fence: no process but this subshell.)
copies() {
    local before after d n=0
    shopt -s nullglob
    before=("$T"/*/state/tasks/"$1"/warm.json)
    local vms; vms=$(vm_runs "$1")
    after=("$T"/*/state/tasks/"$1"/warm.json)
    shopt -u nullglob
    for d in $vms; do
        [[ " ${before[*]} ${after[*]} " == *" ${d%/run-*}/warm.json "* ]] || n=$((n + 1))
    done
    echo "$n"
}
# What made copies() count more than one of task $1: the VMs, their state and
# start time, the markers (for a failing check's report, in $T/doubled.txt).
copies_seen() {
    local pid
    echo "# $(date +%T.%N) ($2): copies of $1: $(copies "$1")"
    ls "$T"/*/state/tasks/"$1"/warm.json 2>/dev/null | sed 's/^/#   marker /'
    vm_list | grep -- "$T/[^ ]*/tasks/$1/run-" | while read -r pid _; do
        echo "#   pid $pid: $(cut -d' ' -f3,22 "/proc/$pid/stat" 2>/dev/null) $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -o -- "$T/[^ ]*/tasks/$1/run-[0-9]*" | head -n1)"
    done
}
alive() { # (a zombie is dead)
    local st
    { read -r st < "/proc/$1/stat"; } 2>/dev/null || return 1
    st=${st#*) }
    [ "${st:0:1}" != Z ]
}


start_nodes() { # the agents of nodes a, b, c; all three must see each other alive
    for x in a b c; do node "$x" || { not_ok "agent of node $x starts"; return 1; }; done
    ok "agents of nodes a, b, c start in cluster mode"
    for _ in $(seq 150); do
        [ "$(vkp b --json nodes | jq '[.nodes[] | select(.state == "alive")] | length')" = 3 ] && break
        sleep 0.2
    done
    [ "$(vk b --json nodes | jq '[.nodes[] | select(.state == "alive")] | length')" = 3 ] \
        && ok "vmckpt nodes: three nodes alive" || not_ok "three nodes alive" "$(vk b nodes)"
}
ncheckpoints() { vkp "$1" --json ls "$2" | jq ".checkpoints | length"; }
counting_task() { # counting_task NODE TASK: a counter task with two checkpoints taken while it counts
    # (--every alone: the first checkpoint one interval on, and after a take-over)
    check "node $1 runs a counter task, checkpoint every 2 s" run_counter "$1" "$2" --every 2 || return 1
    wait_line "$(serial_of "$1" "$2")" '^counter 2$' 90
    local n0
    n0=$(ncheckpoints "$1" "$2")
    for _ in $(seq 300); do [ "$(ncheckpoints "$1" "$2")" -ge $((n0 + 2)) ] && break; sleep 0.2; done
}
resumed_consistently() { # resumed_consistently NODE TASK NEWEST_SEQ ORIGINAL_SERIAL_LOG
    local w=$1 t=$2 last=$3 s=$4 from s2 want
    from=$(vk "$w" --json status "$t" | jq .restore.from_seq)
    [ "$from" -ge "$last" ] && ok "from its newest checkpoint ($from)" || not_ok "from the newest checkpoint" "from $from, newest $last"
    s2=$(serial_of "$w" "$t")
    wait_line "$s2" '^counter [0-9]' 60
    want=$(( $(counter_at "$w" "$t" "$from" "$s") + 1 ))
    [ "$(first_counter "$s2")" = "$want" ] && ok "the guest resumes at counter $want" || not_ok "resumes at $want" "$(got_counter "$s2")"
    wait_line "$s2" "^counter $((want + 2))\$" 60 && ! grep -aq MISMATCH "$s2" && ok "disk matches memory, and it counts on" \
        || not_ok "consistent after take-over"
    # the schedule goes on where the task runs now (a checkpoint beyond the one restored)
    for _ in $(seq 600); do [ "$(vkp "$w" --json status "$t" | jq -r '.last_checkpoint.seq // 0')" -gt "$from" ] && break; sleep 0.2; done
    [ "$(vkp "$w" --json status "$t" | jq -r '.last_checkpoint.seq // 0')" -gt "$from" ] \
        && ok "after the take-over a checkpoint commits by itself" || not_ok "after the take-over a checkpoint commits by itself" "$(vk "$w" status "$t")"
}
watch_fence() { # watch_fence TASK VM_PID SECONDS: sets fenced and resumed (ms from now, or
    # empty) and max (most copies of TASK seen at once), sampling every 0.1 s
    local t0 c
    # (the clock from bash's EPOCHREALTIME, in µs: no process a sample for it)
    t0=${EPOCHREALTIME/./}; fenced=; resumed=; max=0
    for _ in $(seq $(($3 * 10))); do
        [ -z "$fenced" ] && ! alive "$2" && fenced=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
        c=$(copies "$1"); [ "$c" -gt "$max" ] && max=$c
        [ "$c" -gt 1 ] && copies_seen "$1" "$(( (${EPOCHREALTIME/./} - t0) / 1000 )) ms" >>"$T/doubled.txt"
        [ -n "$fenced" ] && [ "$c" = 1 ] && { resumed=$(( (${EPOCHREALTIME/./} - t0) / 1000 )); return 0; }
        sleep 0.1
    done
}

# stale_commit_case TASK: node a checks its lease for checkpoint 2 of TASK,
# then stalls (SIGSTOP) before it writes the manifest; another node takes the
# task over; node a, awake again, must not write it (the store checks the
# proof of the lease in the same step as the write), and the new node's
# checkpoint is number 3 (2 was voided when it took the task over, so that a
# write of node a's later still would fail). Node a's agent runs with
# AGENT_ENV="$CGATE_ENV".
stale_commit_case() {
    local t=$1 W w log=$T/a/agent.log
    check "node a runs $t" run_counter a "$t" || return 1
    wait_line "$(serial_of a "$t")" '^counter 2$' 90
    check "checkpoint 1 of $t on node a" vk a checkpoint "$t"
    cgate_close
    check "checkpoint 2 of $t starts" vk a checkpoint "$t" --no-wait
    cgate_held "$t" 2 && ok "checkpoint 2 of $t is uploaded and its lease checked; it waits before its manifest" \
        || not_ok "held between the lease check and the write"
    kill -STOP "$AGENT_a"
    ok "node a's agent stopped (SIGSTOP) between its lease check and its write"
    if W=$(wait_where "$t" b 60); then ok "$W took $t over"; else not_ok "another node takes $t over" "$(tail -5 "$T/b/agent.log")"; fi
    w=${W#node-}
    kill -CONT "$AGENT_a"
    cgate_open
    for _ in $(seq 600); do grep -q "task $t: checkpoint 2 failed" "$log" && break; sleep 0.1; done
    grep -Eq "task $t: checkpoint 2 failed.*(not written: lease .* is held by node-$w|blocklisted)" "$log" \
        && ok "node a's write of manifest 2 is refused by the store: its proof of the lease is void" \
        || not_ok "the store refuses node a's stale write" "$(grep "task $t" "$log" | tail -3)"
    [ "$(vk "$w" --json ls "$t" | jq '.checkpoints | length')" = 1 ] && ok "$t still has one checkpoint" \
        || not_ok "one checkpoint of $t" "$(vk "$w" ls "$t")"
    check "node-$w checkpoints $t" vk "$w" checkpoint "$t"
    grep -q "^checkpoint 3 of $t committed" "$T/last.out" && ok "as number 3 (2 voided at the take-over)" \
        || not_ok "number 3" "$(cat "$T/last.out")"
    check "every checkpoint of $t verifies" vk "$w" verify "$t"
    [ "$(copies "$t")" = 1 ] && ok "one copy of $t runs" || not_ok "one copy of $t" "$(copies "$t")"
}
