#!/bin/bash
# Checkpoint modes: live (pre-copy, disk sealed at pre-switchover), cow,
# stop-copy and auto. Each restores with disk and memory of one instant; a
# pre-copy that cannot converge (the spool's bandwidth held to 1 MiB/s, so
# it certainly cannot on any machine) falls back to cow under auto and still
# commits, and fails cleanly when live is forced; an agent killed while QEMU
# waits in pre-switchover (a gate holds it there) leaves a VM that the next
# agent cancels the save of and runs again.
. "$(dirname "$0")/lib.sh"

# restore_at AGENT TASK SEQ WANT: restores checkpoint SEQ, checks the counter
restore_at() {
    local a=$1 t=$2 seq=$3 want=$4 S
    check "$t: restore from checkpoint $seq" vk "$a" restore "$t" --checkpoint "$seq" || return
    S=$(serial_of "$a" "$t")
    wait_line "$S" '^counter [0-9]' 60
    [ "$(first_counter "$S")" = "$want" ] && ok "$t: checkpoint $seq resumes at counter $want" \
        || not_ok "$t: checkpoint $seq resumes at counter $want" "$(got_counter "$S")"
    wait_line "$S" "^counter $((want + 2))\$" 60 && ok "$t: restored $seq counts on" \
        || not_ok "$t: restored $seq counts on" "$(tail -2 "$S")"
    ! grep -aq MISMATCH "$S" && ok "$t: restored $seq: disk matches memory" \
        || not_ok "$t: restored $seq: disk matches memory" "$(grep -a MISMATCH "$S" | head -2)"
    vk "$a" kill "$t" >/dev/null 2>&1
}
mode_of() { vk "$1" --json show "$2" "$3" | jq -r .mode; }
why_of() { vk "$1" --json show "$2" "$3" | jq -r '.mode_why // ""'; }

# ---- 1. each mode, and auto, restores consistently -------------------------
start_agent a || { not_ok "agent starts"; finish; exit 1; }
check "run a counter task (mode setting: default)" run_counter a c1 || { finish; exit 1; }
S1=$(serial_of a c1)
wait_line "$S1" '^counter 3$' 90 || not_ok "guest boots and counts"
[ "$(vk a --json status c1 | jq -r .mode)" = auto ] && ok "the default mode is auto" \
    || not_ok "the default mode is auto" "$(vk a --json status c1 | jq -r .mode)"
declare -A want
i=0
for m in live cow stop-copy auto; do
    i=$((i + 1))
    check "checkpoint $i (--mode $m) commits" vk a checkpoint c1 --mode "$m"
    want[$i]=$(( $(counter_at a c1 "$i" "$S1") + 1 ))
    wait_line "$S1" "^counter $((want[$i] + 1))\$" 60 || not_ok "the guest counts on after checkpoint $i"
done
for i in 1 2 3 4; do
    exp=(x live cow stop-copy live)
    [ "$(mode_of a c1 $i)" = "${exp[$i]}" ] && ok "checkpoint $i was taken ${exp[$i]}" \
        || not_ok "checkpoint $i was taken ${exp[$i]}" "mode $(mode_of a c1 $i)"
done
why_of a c1 4 | grep -q "^live: pre-copy converged before, stopping the VM" \
    && ok "auto says why it chose live" || not_ok "auto says why it chose live" "$(why_of a c1 4)"
why_of a c1 2 | grep -q "^cow: asked for" && ok "a forced mode says so" || not_ok "a forced mode says so" "$(why_of a c1 2)"
check "ls shows the modes and why" vk a ls c1
grep -q "^4 .* live .*live: pre-copy converged before" "$T/last.out" && ok "ls lists mode and reason" \
    || not_ok "ls lists mode and reason" "$(cat "$T/last.out")"
vk a show c1 4 | grep -q "^mode chosen: live: .*(task's mode setting: auto)" && ok "show says the mode chosen and the setting" \
    || not_ok "show says the mode chosen and the setting" "$(vk a show c1 4 | head -3)"
check "verify: all four intact" vk a verify c1
check "kill -9 of the VM" vk a kill c1
for i in 1 2 3 4; do restore_at a c1 "$i" "${want[$i]}"; done
vk a metrics | grep -q '^vmckpt_live_fallbacks_total{task="c1"} 0$' && ok "metrics: no live fallback" \
    || not_ok "metrics: no live fallback" "$(vk a metrics | grep fallback)"
check_fails "an unknown mode is refused" "auto, live, cow or stop-copy" vk a checkpoint c1 --mode fast
vk a rm c1 >/dev/null 2>&1
stop_agent a

# ---- 2. pre-copy that cannot converge ---------------------------------------
start_agent b --set live.bandwidth_mib=1 --set live.converge_s=2 || not_ok "agent b starts"
check "run a counter task on b" run_counter b c2
S2=$(serial_of b c2)
wait_line "$S2" '^counter 3$' 90 || not_ok "guest on b counts"
check "auto checkpoint commits although pre-copy cannot converge" vk b checkpoint c2
w1=$(( $(counter_at b c2 1 "$S2") + 1 ))
[ "$(mode_of b c2 1)" = cow ] && ok "it was taken with cow" || not_ok "it was taken with cow" "mode $(mode_of b c2 1)"
why_of b c2 1 | grep -q "^cow: live pre-copy did not converge in 2 s" && ok "the reason names the give-up" \
    || not_ok "the reason names the give-up" "$(why_of b c2 1)"
grep -q "did not converge.*taking it paused" "$T/b/agent.log" && ok "the agent logs the fallback" \
    || not_ok "the agent logs the fallback"
[ "$(vk b --json status c2 | jq .live_fallbacks)" = 1 ] && ok "status counts one fallback" \
    || not_ok "status counts one fallback" "$(vk b --json status c2 | jq .live_fallbacks)"
vk b metrics | grep -q '^vmckpt_live_fallbacks_total{task="c2"} 1$' && ok "metrics count one fallback" \
    || not_ok "metrics count one fallback" "$(vk b metrics | grep fallback)"
check_fails "forced live fails when pre-copy cannot converge" "did not converge" vk b checkpoint c2 --mode live
grep -q "mode auto would have taken it paused" "$T/last.out" && ok "and says what would work" \
    || not_ok "and says what would work" "$(cat "$T/last.out")"
[ "$(vk b --json status c2 | jq -r .state)" = running ] && ok "the task still runs" || not_ok "the task still runs"
c=$(last_counter "$S2")
wait_line "$S2" "^counter $((c + 2))\$" 60 && ok "the VM runs after the failed live checkpoint" \
    || not_ok "the VM runs after the failed live checkpoint" "stuck at $(last_counter "$S2")"
check "the next auto checkpoint commits" vk b checkpoint c2
why_of b c2 2 | grep -q "^cow: pre-copy gave up" && ok "auto skips live after giving up" \
    || not_ok "auto skips live after giving up" "$(why_of b c2 2)"
check "kill -9 of the VM on b" vk b kill c2
restore_at b c2 1 "$w1"
vk b rm c2 >/dev/null 2>&1
stop_agent b

# ---- 3. the agent dies while QEMU waits in pre-switchover --------------------
SWG=$T/switchover-gate
AGENT_ENV="VMCKPT_TEST_SWITCHOVER_GATE=$SWG" start_agent c || not_ok "agent c starts"
check "run a counter task on c" run_counter c c3
S3=$(serial_of c c3)
wait_line "$S3" '^counter 3$' 90 || not_ok "guest on c counts"
check "a first checkpoint commits" vk c checkpoint c3 --mode cow
touch "$SWG"
vk c checkpoint c3 --mode live > "$T/held.out" 2>&1 &
for _ in $(seq 1200); do [ -e "$SWG.pre-switchover" ] && break; sleep 0.1; done
[ -e "$SWG.pre-switchover" ] && ok "a live checkpoint waits in pre-switchover" \
    || not_ok "a live checkpoint waits in pre-switchover" "$(cat "$T/held.out")"
vmpid=$(vk c --json status c3 | jq .pid)
sleep 1
c=$(last_counter "$S3"); sleep 2
[ "$(last_counter "$S3")" = "$c" ] && ok "the VM is paused there" || not_ok "the VM is paused there" "$c -> $(last_counter "$S3")"
eval "kill -9 \$AGENT_c"; wait "$AGENT_c" 2>/dev/null
rm -f "$SWG"
kill -0 "$vmpid" && ok "the VM outlives its agent" || not_ok "the VM outlives its agent"
start_agent c && ok "agent c starts again" || not_ok "agent c starts again"
grep -q "memory save was left pre-switchover; cancelling it" "$T/c/agent.log" \
    && ok "the new agent cancels the save left in pre-switchover" \
    || not_ok "the new agent cancels the save left in pre-switchover" "$(tail -3 "$T/c/agent.log")"
[ "$(vk c --json status c3 | jq -r .state)" = running ] && [ "$(vk c --json status c3 | jq .pid)" = "$vmpid" ] \
    && ok "it takes the same VM back, running" || not_ok "it takes the same VM back, running" "$(vk c status c3)"
c=$(last_counter "$S3")
wait_line "$S3" "^counter $((c + 2))\$" 60 && ok "the VM counts on" || not_ok "the VM counts on" "stuck at $(last_counter "$S3")"
check "a checkpoint after adoption commits" vk c checkpoint c3
seq=$(vk c --json ls c3 | jq '.checkpoints[-1].seq')
w3=$(( $(counter_at c c3 "$seq" "$S3") + 1 ))
check "kill -9 of the VM on c" vk c kill c3
restore_at c c3 "$seq" "$w3"
vk c rm c3 >/dev/null 2>&1
stop_agent c
finish
