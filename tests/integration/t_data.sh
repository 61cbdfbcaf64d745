#!/bin/bash
# The data path: only changed chunks are stored, a base is stored once for
# every task, retention keeps the newest K checkpoints, merging bounds the
# chain, GC frees what nothing references (and is harmless when killed), and
# --latest-intact falls back past a damaged checkpoint.
. "$(dirname "$0")/lib.sh"

start_agent a --set data.keep=3 --set data.max_chain=3 --set data.gc_grace=0 || { not_ok "agent starts"; finish; exit 1; }
check "run a counter task that also writes its disk" run_counter a d1 --work counter,disk:2 || { finish; exit 1; }
S=$(serial_of a d1)
wait_line "$S" '^counter 2$' 90
for i in 1 2 3 4 5 6; do
    check "checkpoint $i" vk a checkpoint d1
    sleep 1
done
M=$T/store/tasks/d1/manifests
[ "$(ls "$M" | tr '\n' ' ')" = "0000000004.json 0000000005.json 0000000006.json " ] \
    && ok "retention keeps the newest 3 checkpoints" || not_ok "retention keeps the newest 3" "$(ls "$M")"
nd=$(jq '.deltas | length' "$M/0000000006.json")
[ "$nd" -le 3 ] && ok "merging bounds the chain: checkpoint 6 needs $nd deltas, not 6" || not_ok "chain bounded" "$nd deltas"
grep -q "merged into one" "$T/a/agent.log" && ok "deltas were merged" || not_ok "deltas were merged"
mem=$(jq .memory.size "$M/0000000006.json"); added=$(jq .uploaded_bytes "$M/0000000006.json")
[ $((added * 100 / mem)) -le 30 ] && ok "a later checkpoint stores $((added * 100 / mem))% of the memory size (<= 30%)" \
    || not_ok "later checkpoint small" "$added of $mem"
check "every checkpoint verifies" vk a verify d1
# Issue 16: the codec choice is explained: the cost of keeping bytes counted
# once per copy (a directory store keeps one), the lowest cost marked.
vk a show d1 6 > "$T/show.txt"
grep -q "keeps 1 copy; a GB stored is worth 30 s of CPU" "$T/show.txt" && grep -q "<- lowest" "$T/show.txt" \
    && grep -Eq "^  zstd3 +compress .* = [0-9.]+ ns/byte" "$T/show.txt" \
    && ok "show explains each codec's cost (compress + upload + keep)" || not_ok "show explains the codec costs" "$(cat "$T/show.txt")"

# GC already ran after retention: a second GC finds nothing to delete.
vk a --json gc --grace 0 > "$T/gc.json"
nchunks=$(stored_chunks "$T/store" | wc -l)
ref=$(jq .chunks_referenced "$T/gc.json")
[ "$(jq .chunks_deleted "$T/gc.json")" = 0 ] && ok "retention collected its garbage itself" || not_ok "retention collected its garbage" "$(cat "$T/gc.json")"
# A pack is rewritten once it is more than half garbage, so some garbage may stay.
[ "$nchunks" -ge "$ref" ] && [ $(( (nchunks - ref) * 2 )) -le "$nchunks" ] \
    && ok "referenced chunks are stored, garbage stays under half ($ref of $nchunks)" \
    || not_ok "referenced chunks are stored, garbage under half" "referenced $ref, stored $nchunks"

# Merged chain restores consistently, from the oldest kept and the newest.
check "kill the VM" vk a kill d1
for seq in 4 6; do
    want=$(( $(counter_at a d1 $seq "$S") + 1 ))
    check "restore checkpoint $seq" vk a restore d1 --checkpoint $seq
    S2=$(serial_of a d1)
    wait_line "$S2" '^counter [0-9]' 60
    [ "$(first_counter "$S2")" = "$want" ] && ok "checkpoint $seq resumes at $want" || not_ok "checkpoint $seq resumes at $want" "$(got_counter "$S2")"
    wait_line "$S2" "^counter $((want + 2))\$" 60
    ! grep -a MISMATCH "$S2" && ok "checkpoint $seq: disk matches memory" || not_ok "checkpoint $seq: disk matches memory"
    check "kill" vk a kill d1
done

# A second task on the same base: the base is not stored again.
check "run a second task on the same base" run_counter a d2
wait_line "$(serial_of a d2)" '^counter 2$' 90
check "its first checkpoint" vk a checkpoint d2
M2=$T/store/tasks/d2/manifests/0000000001.json
[ "$(jq -r .base.name "$M2")" = "$(jq -r .base.name "$M/0000000006.json")" ] && ok "both tasks name the same base stream" || not_ok "same base stream"
a1=$(jq .uploaded_bytes "$M2"); base=$(jq .base.size "$M2")
echo "# second task, first checkpoint: $a1 bytes added; the base is $base bytes"
[ "$(jq .data.stored.dedup_chunks "$M2")" -gt 0 ] && ok "the second task reuses stored chunks" || not_ok "reuses chunks"

# A checkpoint that retention and GC remove while verify reads it is not
# damage: verify waits at a gate before checkpoint 4, which leaves the store
# (its manifest and its memory's index, as retention and GC would delete
# them: its chunks become garbage), then goes on.
stop_agent a
AGENT_ENV="VMCKPT_TEST_VERIFY_GATE=$T/verify-gate" start_agent a --set data.gc_grace=0
touch "$T/verify-gate"
vk a verify d1 >"$T/vg.out" 2>&1 &
V=$!
for _ in $(seq 600); do [ -e "$T/verify-gate.d1-4" ] && break; sleep 0.1; done
rm -f "$T/store/$(jq -r .memory.name "$M/0000000004.json")" "$M/0000000004.json"
rm -f "$T/verify-gate"
wait "$V" && grep -q "checkpoint 4: left the store while it was read" "$T/vg.out" && grep -q "checkpoint 6: intact" "$T/vg.out" \
    && ok "a checkpoint removed while verify reads it is reported as gone, not damaged" \
    || not_ok "a checkpoint removed during verify is not damage" "$(cat "$T/vg.out")"
unset AGENT_ENV

# GC killed half-way breaks nothing.
stop_agent a
# GC stops at a gate after its first deletion: the agent is killed there.
AGENT_ENV="VMCKPT_TEST_GC_GATE=$T/gc-gate"
touch "$T/gc-gate"
start_agent a --set data.gc_grace=0
vk a gc --grace 0 >/dev/null 2>&1 &
for _ in $(seq 1200); do [ -e "$T/gc-gate.sweep" ] && break; sleep 0.1; done
[ -e "$T/gc-gate.sweep" ] && ok "GC has deleted an object and is held half-way" || not_ok "GC reaches its first deletion"
kill -9 "$AGENT_a"; wait "$AGENT_a" 2>/dev/null
unset AGENT_ENV
ok "agent killed during garbage collection"
start_agent a --set data.gc_grace=0
check "every committed checkpoint still verifies after a GC cut short" vk a verify
check "gc finishes on a second run" vk a gc --grace 0

# --latest-intact: damage a chunk only the newest checkpoint has. (The
# memory kept on this node would restore it whatever the store holds, as
# t_protect shows: this agent keeps none.)
stop_agent a
start_agent a --set data.gc_grace=0 --set task.keep_local_mib=0
new=$(comm -23 <(jq -r '.chunks[] | select(.[2] != "zero") | .[0]' "$T/store/$(jq -r .memory.name "$M/0000000006.json")" | sort -u) \
               <(jq -r '.chunks[] | select(.[2] != "zero") | .[0]' "$T/store/$(jq -r .memory.name "$M/0000000005.json")" | sort -u) | head -n1)
read -r P OFF LEN CODEC <<< "$(chunk_loc "$T/store" "$new")"
flip_byte "$P" $((OFF + LEN - 1))
check_fails "restore of the damaged newest checkpoint fails, naming the chunk" "chunk $new in pack" vk a restore d1
check "restore --latest-intact falls back to checkpoint 5" vk a --json restore d1 --latest-intact
[ "$(jq .restore.from_seq "$T/last.out")" = 5 ] && ok "it restored checkpoint 5" || not_ok "it restored checkpoint 5" "$(head -c 300 "$T/last.out")"
S3=$(serial_of a d1)
want=$(( $(counter_at a d1 5 "$S") + 1 ))
wait_line "$S3" '^counter [0-9]' 60
[ "$(first_counter "$S3")" = "$want" ] && ok "and resumed at $want" || not_ok "resumed at $want" "$(got_counter "$S3")"
grep -q "checkpoint 6 cannot be restored" "$T/a/agent.log" && ok "the skipped checkpoint is logged" || not_ok "the skipped checkpoint is logged"
check_fails "verify reports the damage" "DAMAGED" vk a verify d1
stop_agent a
finish
