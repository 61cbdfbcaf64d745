#!/bin/bash
# Restart and restore times with a guest that rewrites most of its memory
# (mem:N, N = 3/4 of it): for each size in BENCH_SIZES, a task checkpointed
# once (its upload committed), then
#   restart: its QEMU killed -9, [task] restart brings it back on this node;
#   restore: the task removed here and restored on a second agent that
#            shares the store (nothing of it on that node).
# Each row: kill (or restore command) to running, and the agent's split of
# it: fetch (the store or the local copy, decompression, hashing, deltas
# written), load+resume (QEMU reads the memory stream, then runs), and the
# bytes read from the store and from local copies. Target (issue 28): a
# restart on the same node at 1 GiB in at most 3 s with no load.
# Usage: bench/restart.sh [BUILD_DIR]   Settings: BENCH_SIZES ("256 1024"),
#        BENCH_RUNS (3), BENCH_STORE (a directory store in the work directory),
#        BENCH_SET (more agent settings, e.g. "--set task.keep_local_mib=0":
#        the restart reads the store, as before the kept image)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$(cd "${1:-build/rel}" && pwd)
G=$(pwd)/build/guest
RUNS=${BENCH_RUNS:-3}
D=$(mktemp -d /var/tmp/vmckpt-restart.XXXXXX)
STORE=${BENCH_STORE:-file://$D/store}
AGENTS=()
cleanup() {
    for p in "${AGENTS[@]}"; do kill "$p" 2>/dev/null; done
    pkill -9 -f "$D/" 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT
vk() { local x=$1; shift; "$B/vmckpt" --socket "$D/$x/vmckptd.sock" "$@"; }
agent() {
    # shellcheck disable=SC2086
    "$B/vmckptd" --state-dir "$D/$1" --store "$STORE" --set qemu.accel=tcg ${BENCH_SET:-} >"$D/$1.log" 2>&1 &
    AGENTS+=($!)
    disown # (its end at clean-up is no news)
    for _ in $(seq 100); do vk "$1" status >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "bench: agent $1 does not start: $(tail -3 "$D/$1.log")" >&2; exit 1
}
running_again() { # running_again AGENT TASK OLD_PID: waits until a new VM runs
    for _ in $(seq 3000); do
        st=$(vk "$1" --json status "$2" 2>/dev/null) || { sleep 0.02; continue; }
        [ "$(jq -r .state <<<"$st")" = running ] && [ "$(jq -r .pid <<<"$st")" != "$3" ] && return 0
        sleep 0.02
    done
    echo "bench: $2 did not run again on $1: $(vk "$1" status "$2")" >&2; exit 1
}
row() { # row KIND SIZE RUN SECONDS AGENT TASK
    local r
    r=$(vk "$5" --json status "$6" | jq -r '.restore | "\(.fetch_us / 1e6),\(.load_us / 1e6),\(.store_bytes),\(.cache_bytes + .local_bytes)"')
    echo "$1,$2,$3,$(printf '%.2f' "$4"),$r"
}
agent a
agent b
echo "kind,memory_mib,run,kill_to_running_s,fetch_s,load_resume_s,store_bytes,local_bytes"
# (restore: kill_to_running_s is the restore command's time; local_bytes:
# read from the node's caches and the memory image kept there)
for size in ${BENCH_SIZES:-256 1024}; do
    for r in $(seq "$RUNS"); do
        t=r$size-$r-$$ # (a store may hold an earlier run's)
        vk a run "$t" --base "$G/base.qcow2" --kernel "$G/vmlinuz" --initrd "$G/initrd.img" \
            --work "mem:$((size * 3 / 4))" --memory "$size" >/dev/null
        # the guest has rewritten its memory once: what a checkpoint holds is fresh
        for _ in $(seq 3000); do grep -aq '^mem: pass 1' "$(vk a --json status "$t" | jq -r .serial_log)" && break; sleep 0.2; done
        vk a checkpoint "$t" >/dev/null
        pid=$(vk a --json status "$t" | jq -r .pid)
        t0=$EPOCHREALTIME
        kill -9 "$pid"
        running_again a "$t" "$pid"
        row restart "$size" "$r" "$(echo "$EPOCHREALTIME - $t0" | bc)" a "$t"
        vk a checkpoint "$t" >/dev/null
        vk a rm "$t" >/dev/null
        t0=$EPOCHREALTIME
        vk b restore "$t" >/dev/null
        row restore "$size" "$r" "$(echo "$EPOCHREALTIME - $t0" | bc)" b "$t"
        vk b rm --purge "$t" >/dev/null
        vk a rm --purge "$t" >/dev/null 2>&1 || true
    done
done
