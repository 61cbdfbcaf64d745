#!/bin/bash
# The soak benchmark's short form (bench/soak.sh runs >= 1000): a counter
# task checkpointed once a second by its policy for SOAK_N checkpoints with
# keep 5, max_local_chain 4, gc_grace 0. Sampled after every commit: the
# running chain at most 4 deep, the agent's open files not growing; at the
# end the store holds exactly 5 manifests and no more packs than a small
# multiple of what it held after the first 10 checkpoints; kill -9 and a
# restore of the newest checkpoint resume consistently.
. "$(dirname "$0")/lib.sh"
N=${SOAK_N:-30}

start_agent a --set data.keep=5 --set data.max_local_chain=4 --set data.gc_grace=0 \
    && ok "agent starts (keep 5, max_local_chain 4, gc_grace 0)" || { not_ok "agent starts"; finish; exit 1; }
check "run a counter task, a checkpoint a second" run_counter a s1 --first 1 --every 1 || { finish; exit 1; }
S=$(serial_of a s1)
seq_now() { vkp a --json status s1 | jq -r '.last_checkpoint.seq // 0'; }
fds() { ls "/proc/$AGENT_a/fd" | wc -l; }
packs() { find "$T/store" -path '*pack*' -type f | wc -l; }

deepest=0 fds10= packs10= last=0 stuck=0
# (one status a poll, by the release client: this loop was most of the
# test's CPU when it asked three times a poll under ASan)
while :; do
    st=$(vkp a --json status s1)
    s=$(jq -r '.last_checkpoint.seq // 0' <<<"$st")
    [ "$s" -ge "$N" ] && break
    if [ "$s" = "$last" ]; then stuck=$((stuck + 1)); [ "$stuck" -gt 1200 ] && break; sleep 0.1; continue; fi
    stuck=0; last=$s
    d=$(jq -r .local_chain.depth <<<"$st"); [ "$d" -gt "$deepest" ] && deepest=$d
    if [ -z "$fds10" ] && [ "$s" -ge 10 ]; then fds10=$(fds); packs10=$(packs); fi
done
[ "$(seq_now)" -ge "$N" ] && ok "$N periodic checkpoints committed" || not_ok "$N periodic checkpoints committed" "at $(seq_now)"
[ "$deepest" -le 4 ] && ok "the running chain stayed at most 4 deep (deepest seen $deepest)" || not_ok "chain at most 4 deep" "deepest $deepest"
[ "$(vk a --json status s1 | jq -r .local_chain.merges)" -ge 5 ] && ok "its layers were merged ($(vk a --json status s1 | jq -r .local_chain.merges) merges)" || not_ok "merges" "$(vk a --json status s1 | jq -c .local_chain)"
f=$(fds); [ "$f" -le $((fds10 + 4)) ] && ok "the agent's open files did not grow ($fds10 after 10 checkpoints, $f after $N)" || not_ok "agent fds flat" "$fds10 -> $f"
[ "$(vk a --json ls s1 | jq '.checkpoints | length')" = 5 ] && ok "the store holds the newest 5 checkpoints" || not_ok "5 checkpoints kept" "$(vk a ls s1)"
p=$(packs); [ "$p" -le $((packs10 * 3)) ] && ok "the store's packs stay bounded ($packs10 after 10, $p after $N)" || not_ok "packs bounded" "$packs10 -> $p"
check "every kept checkpoint verifies" vk a verify s1
seq=$(seq_now)
check "kill -9 of the VM" vk a kill s1
for _ in $(seq 300); do vkp a restore s1 >"$T/last.out" 2>&1 && break; sleep 0.1; done # (a periodic upload may end first)
S2=$(serial_of a s1)
wait_line "$S2" '^counter [0-9]' 60
got=$(first_counter "$S2")
from=$(vk a --json status s1 | jq -r .restore.from_seq)
want=$(( $(counter_at a s1 "$from" "$S") + 1 ))
[ "$got" = "$want" ] && ok "restored from checkpoint $from at counter $want" || not_ok "restore resumes at $want" "got $got (from $from)"
wait_line "$S2" "^counter $((want + 2))\$" 60 && ! grep -aq MISMATCH "$S2" && ok "restored: counts on, disk matches memory" || not_ok "restored consistent"
check "rm the task (between its periodic checkpoints)" rm_task a s1
stop_agent a
finish
