#!/bin/bash
# kill -9 of the agent in the middle of checkpoints (during the memory save of
# a stop-copy checkpoint, while the VM is paused, and during the upload): the
# store must hold only complete checkpoints, the agent must start again, take
# its VM back running, and checkpoint and restore as before.
. "$(dirname "$0")/lib.sh"

# The save gate holds a checkpoint right after QEMU's migrate began (a
# stop-copy's VM paused, a cow's pages being copied): the agent is killed in
# that state for certain, however fast the machine saves memory.
SGATE=$T/save-gate
AGENT_ENV="VMCKPT_TEST_SAVE_GATE=$SGATE"
start_agent a || { not_ok "agent starts"; finish; exit 1; }
check "run a counter task" run_counter a c1 || { finish; exit 1; }
S=$(serial_of a c1)
QPID=$(pid_of a c1)
wait_line "$S" '^counter 2$' 90 && ok "guest counts" || not_ok "guest counts"
check "a first checkpoint commits" vk a checkpoint c1

store_is_consistent() { # every manifest names stream indexes whose chunks are all there
    local m idx missing
    stored_chunks "$T/store" > "$T/stored"
    for m in "$T"/store/tasks/c1/manifests/*.json; do
        [ -e "$m" ] || continue
        for idx in $(jq -r '([.kernel, .initrd, .base, .memory] + .deltas)[].name' "$m"); do
            [ -f "$T/store/$idx" ] || { echo "# $m: $idx missing"; return 1; }
            missing=$(jq -r '.chunks[] | select(.[2] != "zero") | .[0]' "$T/store/$idx" | sort -u |
                      comm -23 - "$T/stored" | head -n1)
            [ -z "$missing" ] || { echo "# $idx: chunk $missing missing"; return 1; }
        done
    done
}

crash_during() { # crash_during WHAT save|gate MODE
    local what=$1 at=$2 mode=$3 before
    before=$(ls "$T"/store/tasks/c1/manifests | wc -l)
    [ "$at" = save ] && touch "$SGATE"
    vk a checkpoint c1 --mode "$mode" --no-wait >/dev/null 2>&1 &
    if [ "$at" = gate ]; then
        gate_held c1 '*' && ok "the upload is in flight, held at the gate" || not_ok "the upload reaches the gate"
    else
        for _ in $(seq 1200); do [ -e "$SGATE.$mode" ] && break; sleep 0.1; done
        [ -e "$SGATE.$mode" ] && ok "the $mode memory save is under way, held at the save gate" \
            || not_ok "the $mode memory save reaches the save gate"
    fi
    kill -9 "$AGENT_a"; wait "$AGENT_a" 2>/dev/null
    ok "agent killed during $what"
    [ "$at" = gate ] && gate_open
    [ "$at" = save ] && rm -f "$SGATE" "$SGATE.$mode"
    [ "$(ls "$T"/store/tasks/c1/manifests | wc -l)" = "$before" ] && ok "the cut checkpoint did not commit ($what)" \
        || not_ok "the cut checkpoint did not commit ($what)"
    store_is_consistent && ok "store holds only complete checkpoints after a crash during $what" \
        || not_ok "store holds only complete checkpoints after a crash during $what"
    start_agent a && ok "agent starts again after a crash during $what" || { not_ok "agent starts again"; return 1; }
    grep -q "took back running VM pid $QPID" "$T/a/agent.log" && ok "agent takes its VM back ($what)" \
        || not_ok "agent takes its VM back ($what)" "$(tail -3 "$T/a/agent.log")"
    [ "$(pid_of a c1)" = "$QPID" ] && ok "same QEMU process, not a second copy ($what)" || not_ok "same QEMU process ($what)"
    local c0; c0=$(last_counter "$S")
    wait_line "$S" "^counter $((c0 + 2))\$" 60 && ok "VM runs after the agent restart ($what)" \
        || not_ok "VM runs after the agent restart ($what)" "stuck at $c0"
    ls "$T"/a/state/tasks/c1/run-1/memory-* >/dev/null 2>&1 && not_ok "spool files removed ($what)" || ok "spool files removed ($what)"
    check "a new checkpoint commits after a crash during $what" vk a checkpoint c1
    echo "# manifests: before $before, now $(ls "$T"/store/tasks/c1/manifests | wc -l)"
}

crash_during "a paused stop-copy memory save" save stop-copy
crash_during "a copy-on-write checkpoint" save cow
# The upload stops at a gate between the delta and the memory: kill it there.
AGENT_ENV="$GATE_ENV VMCKPT_TEST_SAVE_GATE=$SGATE"
stop_agent a; start_agent a
gate_close
crash_during "an upload" gate cow
unset AGENT_ENV

check "vmckpt verify after the crashes" vk a verify c1
check "agent restart keeps the task list" bash -c "$BIN/vmckpt --socket $T/a/state/vmckptd.sock status | grep -q '^c1 .*running'"
check "kill the VM" vk a kill c1
check "restore the newest checkpoint" vk a restore c1
S2=$(serial_of a c1)
wait_line "$S2" '^counter [0-9]' 60
want=$(( $(counter_at a c1 "$(ls "$T"/store/tasks/c1/manifests | tail -n1 | sed 's/^0*//; s/.json//')" "$S") + 1 ))
[ "$(first_counter "$S2")" = "$want" ] && ok "restore after agent crashes resumes at counter $want" \
    || not_ok "restore after agent crashes resumes at counter $want" "$(got_counter "$S2")"
wait_line "$S2" "^counter $((want + 2))\$" 60
! grep -a MISMATCH "$S2" && ok "disk matches memory after the agent crashes" || not_ok "disk matches memory"
stop_agent a
finish
