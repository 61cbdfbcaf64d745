#!/bin/bash
# Bad input gets a clear error and changes nothing.
. "$(dirname "$0")/lib.sh"

# (the store's objects are damaged below: a memory image kept on the node
# would restore the newest checkpoint without them, as t_protect shows)
KEEP=(--set task.keep_local_mib=0)
start_agent a "${KEEP[@]}" || { not_ok "agent starts"; finish; exit 1; }
G=$GUEST
runx() { local name=$1 task=$2 base=$3; shift 3; vk "$name" run "$task" --base "$base" --kernel "$KERNEL" --initrd "$G/initrd.img" --memory "$MEM" "$@"; }
no_task_left() { ! vk a status | grep -q "^$1 " && [ ! -e "$T/a/state/tasks/$1" ]; }

# --- base image
check_fails "missing base image" "no such file" runx a b1 "$T/nope.qcow2"
head -c 100000 /dev/urandom > "$T/junk.qcow2"
check_fails "base image that is not an image" "no qcow2 header" runx a b1 "$T/junk.qcow2"
head -c 300000 "$G/base.qcow2" > "$T/trunc.qcow2"
check_fails "truncated qcow2 base image" "damaged" runx a b1 "$T/trunc.qcow2"
no_task_left b1 && ok "a refused run leaves nothing behind" || not_ok "a refused run leaves nothing behind"
check_fails "invalid task id" "not valid" runx a "../x" "$G/base.qcow2"
check_fails "bad accelerator" "kvm or tcg" runx a b2 "$G/base.qcow2" --accel xen

# --- QEMU missing or failing
start_agent noqemu --set qemu.binary=/nonexistent/qemu-system-x86_64
check_fails "QEMU binary missing" "cannot run QEMU" runx noqemu q1 "$G/base.qcow2"
start_agent badqemu --set qemu.machine=no-such-machine
check_fails "QEMU fails to start: its own words are shown" "QEMU exited while starting: .*unsupported machine type" runx badqemu q2 "$G/base.qcow2"
[ ! -e "$T/badqemu/state/tasks/q2" ] && ok "a failed start leaves nothing behind" || not_ok "a failed start leaves nothing behind"
stop_agent noqemu
stop_agent badqemu

# --- unknown task / checkpoint
check_fails "checkpoint of an unknown task" "no task 'ghost'" vk a checkpoint ghost
check_fails "restore of a task with no checkpoint" "no checkpoint" vk a restore ghost
check_fails "kill of an unknown task" "no task 'ghost'" vk a kill ghost

# --- a real task and checkpoints to damage
check "run a counter task" runx a c1 "$G/base.qcow2" --work counter || { finish; exit 1; }
S=$(serial_of a c1)
wait_line "$S" '^counter 2$' 90
check_fails "same task id twice" "already exists" runx a c1 "$G/base.qcow2"
check "checkpoint 1" vk a checkpoint c1
check "checkpoint 2" vk a checkpoint c1
check "checkpoint 3" vk a checkpoint c1
check_fails "unknown checkpoint number" "no checkpoint 99" vk a show c1 99
check_fails "restore while the task runs" "is running" vk a restore c1
check "kill the VM" vk a kill c1
check_fails "checkpoint of a crashed task" "crashed" vk a checkpoint c1

M=$T/store/tasks/c1/manifests
cp "$M/0000000003.json" "$T/m3.good"
sed -i 's/"vcpus": 1/"vcpus": 2/' "$M/0000000003.json"
check_fails "edited manifest is refused" "checksum does not match" vk a restore c1 --checkpoint 3
check_fails "verify reports the damaged manifest" "damaged" vk a verify c1 3
vk a ls c1 | grep -q "^3 .*damaged" && ok "ls shows the damaged manifest" || not_ok "ls shows the damaged manifest" "$(vk a ls c1)"
head -c 200 "$T/m3.good" > "$M/0000000003.json"
check_fails "truncated manifest is refused" "not valid JSON" vk a restore c1 --checkpoint 3
cp "$T/m3.good" "$M/0000000003.json"

# Chunk-level damage. chunk_of MANIFEST_SEQ STREAM N: the hash of the N-th stored chunk.
chunk_of() {
    local idx
    idx=$(jq -r ".$2.name" "$M/$(printf %010d "$1").json")
    jq -r '[.chunks[] | select(.[2] != "zero")]['"$3"'][0]' "$T/store/$idx"
}
restart_a() { kill "$AGENT_a"; wait "$AGENT_a" 2>/dev/null; start_agent a "${KEEP[@]}"; }
C=$(chunk_of 2 memory 5)
read -r P OFF LEN CODEC <<< "$(chunk_loc "$T/store" "$C")"
cp "$P" "$T/pack.good"
flip_byte "$P" $((OFF + LEN - 1))
check_fails "a damaged memory chunk is refused on restore" "memory: chunk $C in pack .* is damaged" vk a restore c1 --checkpoint 2
! pgrep -f "$T/a/state/tasks/c1/run-.*qmp.sock" >/dev/null && ok "no VM left running from damaged data" || not_ok "no VM left running from damaged data"
check_fails "verify names the damaged chunk" "checkpoint 2 memory: chunk $C .*damaged" vk a verify c1
cp "$T/pack.good" "$P"
# A valid record with other content: only the hash can tell. It is appended to
# the pack and the pack index pointed at it (the agent rereads the indexes).
plain=$(jq -r --arg c "$C" '[.chunks[] | select(.[0] == $c)][0][1]' "$T/store/$(jq -r .memory.name "$M/0000000002.json")")
end=$(stat -c %s "$P")
{ perl -e 'print "VKCH", pack("C4", 0, 0, 0, 0), pack("V", $ARGV[0])' "$plain"; head -c "$plain" /dev/urandom; } >> "$P"
PI=$T/store/packidx/$(basename "$P")
cp "$PI" "$T/packidx.good"
jq -c --arg c "$C" --argjson o "$end" --argjson n $((plain + 12)) \
    '.records |= map(if .[0] == $c then [$c, $o, $n, "none"] else . end)' "$T/packidx.good" > "$PI"
restart_a
check_fails "a chunk whose content does not match its name" "does not match its name" vk a verify c1 2
cp "$T/packidx.good" "$PI"
restart_a
mv "$P" "$T/pack.moved"
check_fails "a chunk whose pack is missing" "memory: chunk [0-9a-f]* is missing: its pack .* is gone" vk a restore c1 --checkpoint 2
mv "$T/pack.moved" "$P"
jq -c --arg c "$C" '.records |= map(select(.[0] != $c))' "$T/packidx.good" > "$PI"
restart_a
check_fails "a chunk no pack holds" "chunk $C is missing: no pack" vk a restore c1 --checkpoint 2
cp "$T/packidx.good" "$PI"
cp "$T/pack.good" "$P"
restart_a
D=$(chunk_of 3 'deltas[0]' 0)
read -r P OFF LEN CODEC <<< "$(chunk_loc "$T/store" "$D")"
cp "$P" "$T/pack.good"
truncate -s $((OFF + 20)) "$P"
check_fails "a truncated pack is refused" "delta 1: chunk [0-9a-f]* in pack .*damaged" vk a restore c1 --checkpoint 3
cp "$T/pack.good" "$P"
IDX=$T/store/$(jq -r .memory.name "$M/0000000003.json")
cp "$IDX" "$T/idx.good"
sed -i 's/"lz4"/"brotli"/; s/"none"/"brotli"/; s/"zstd[0-9]"/"brotli"/' "$IDX"
check_fails "an unknown codec is named" "unknown codec 'brotli'" vk a restore c1 --checkpoint 3
cp "$T/idx.good" "$IDX"
check_fails "restore with an accelerator that carries QEMU options" "kvm or tcg" vk a restore c1 --checkpoint 3 --accel "tcg,thread=single"
check "verify is clean once the objects are repaired" vk a verify c1
check "restore works again" vk a restore c1 --checkpoint 3
S3=$(serial_of a c1)
wait_line "$S3" '^counter [0-9]' 60 && ok "restored VM runs" || not_ok "restored VM runs"
check "rm the task" vk a rm c1
check_fails "a task with checkpoints in the store cannot be re-run under its id" "already has 3 checkpoint" runx a c1 "$G/base.qcow2"

# --- second agent on the same state directory
start_agent a2 >/dev/null 2>&1 # other name, own state: must work
"$BIN/vmckptd" --state-dir "$T/a/state" --store "file://$T/store" >"$T/dup.log" 2>&1
grep -q "another vmckptd (pid $AGENT_a) already uses state directory" "$T/dup.log" \
    && ok "second agent on the same state directory is refused, naming the first" \
    || not_ok "second agent on the same state directory is refused" "$(cat "$T/dup.log")"
vk a status >/dev/null && ok "the first agent still serves" || not_ok "the first agent still serves"
stop_agent a2

# --- configuration errors
printf '[task]\nmemory_mib = lots\n' > "$T/bad.conf"
check_fails "bad config value names the file and line" "bad.conf line 2.*memory_mib" "$BIN/vmckptd" --config "$T/bad.conf" --state-dir "$T/x"
printf '[qemu]\nacel = tcg\n' > "$T/bad2.conf"
check_fails "unknown setting is refused" "unknown setting \[qemu\] acel" "$BIN/vmckptd" --config "$T/bad2.conf" --state-dir "$T/x"

# --- store not writable
mkdir -p "$T/ro" && mount -t tmpfs -o size=1m,ro tmpfs "$T/ro"
check_fails "read-only store: the agent refuses to start" "read-only file system" "$BIN/vmckptd" --state-dir "$T/rostate" --store "file://$T/ro/store"

# --- disk full while saving
mkdir -p "$T/small" && mount -t tmpfs -o size=400m tmpfs "$T/small"
start_agent f --store "file://$T/small/store"
check "run a task on the small store" runx f d1 "$G/base.qcow2" --work counter
SF=$(serial_of f d1)
wait_line "$SF" '^counter 2$' 90
check "checkpoint 1 fits" vk f checkpoint d1
avail=$(df --output=avail -B1 "$T/small" | tail -n1)
fallocate -l $((avail - 8192)) "$T/small/filler" # (a later checkpoint adds only ~1 MiB: leave next to nothing)
check_fails "checkpoint on a full store fails cleanly" "no space left" vk f checkpoint d1
c0=$(last_counter "$SF")
wait_line "$SF" "^counter $((c0 + 2))\$" 60 && ok "the VM keeps running after the failed checkpoint" || not_ok "the VM keeps running"
[ "$(ls "$T/small/store/tasks/d1/manifests")" = "0000000001.json" ] && ok "no manifest for the failed checkpoint" || not_ok "no manifest for the failed checkpoint"
[ -z "$(ls -A "$T/small/store/.tmp")" ] && ok "no partial object left in the store" || not_ok "no partial object left" "$(ls "$T/small/store/.tmp")"
check "the previous checkpoint stays valid" vk f verify d1
rm -f "$T/small/filler"
check "with space back, the next checkpoint commits" vk f checkpoint d1
vk f ls d1 | grep -q '^2 ' && ok "it is number 2: the failed one used no number" || not_ok "numbering after a failure" "$(vk f ls d1)"
check "restore after the failure" bash -c "$BIN/vmckpt --socket $T/f/state/vmckptd.sock kill d1 && $BIN/vmckpt --socket $T/f/state/vmckptd.sock restore d1"
SF2=$(serial_of f d1)
wait_line "$SF2" '^counter [0-9]' 60; wait_line "$SF2" "^counter $(( $(first_counter "$SF2") + 2 ))\$" 60
! grep -a MISMATCH "$SF2" && ok "restored task is consistent" || not_ok "restored task is consistent"
stop_agent f
stop_agent a
finish
