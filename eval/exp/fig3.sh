#!/bin/bash
# Figure 3: a checkpoint's phases against guest memory, the guest's memory
# half filled with data it keeps rewriting (mem:N), the base already stored.
# The paper's method (stop-and-copy, whole, compressed) and ours (auto mode,
# dedup, adaptive codec), each point RUNS times. Phases: VM stopped, delta
# sealed, memory saved, stored (upload, after the VM runs again), and the
# whole checkpoint (request to commit).
source "$(dirname "$0")/../lib.sh"
MEMS=${EVAL_FIG3_MEMS:-$([ "$QUICK" = 1 ] && echo "128" || echo "128 256 512 1024 2048")}
both_agents
F=$OUT/fig3.csv
echo "method,mem_mib,run,stopped_ms,seal_ms,mem_save_ms,store_ms,wall_ms,stored_mib,mode_used" >"$F"
row() { # row METHOD MEM RUN JSON
    jq -r --arg m "$1" --arg mem "$2" --arg r "$3" '[$m, $mem, $r, .stopped_us / 1000, .seal_us / 1000,
        .mem_save_us / 1000, .store_us / 1000, .wall_us / 1000, (.uploaded_bytes / 1048576 * 100 | round / 100), .mode] | @csv' <<<"$4" | tr -d '"' >>"$F"
}
n=0
for mem in $MEMS; do
    for x in paper ours; do
        n=$((n + 1)); t=f3-$n
        m=$(mode_of "$x")
        boot "$x" "$t" "$mem" "counter,mem:$((mem / 2))"
        wait_serial "$x" "$t" "^mem: pass 1," 600
        ckpt "$x" "$t" --mode "$m" >/dev/null # the first: stores what later ones find stored
        for r in $(seq "$RUNS"); do
            sleep 2
            row "$x" "$mem" "$r" "$(ckpt "$x" "$t" --mode "$m")"
        done
        vk "$x" rm "$t" >/dev/null
        say "fig3: $mem MiB, $x"
    done
done
say "fig3: $F"
