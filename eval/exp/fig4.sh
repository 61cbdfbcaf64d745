#!/bin/bash
# Figure 4: a checkpoint against the size of the user disk's changes: a
# 128 MiB guest writes N MiB of fresh data to its disk once (fill:N; its disk
# is 1 GiB, the data area 960 MiB), then one checkpoint, the base already
# stored. The paper's method and ours, each point RUNS times (a fresh guest
# each time, so the delta holds just those writes).
source "$(dirname "$0")/../lib.sh"
SIZES=${EVAL_FIG4_SIZES:-$([ "$QUICK" = 1 ] && echo "0 16" || echo "0 256 960")}
both_agents
F=$OUT/fig4.csv
echo "method,delta_write_mib,run,stopped_ms,seal_ms,mem_save_ms,store_ms,wall_ms,delta_mib,stored_mib" >"$F"
for x in ours paper; do # the base and kernel stored once, as in the paper
    boot "$x" warm 128 counter; ckpt "$x" warm >/dev/null; vk "$x" rm warm >/dev/null
done
n=0
for r in $(seq "$RUNS"); do
    for size in $SIZES; do
        for x in paper ours; do
            n=$((n + 1)); t=f4-$n
            m=$(mode_of "$x")
            boot "$x" "$t" 128 "fill:$size"
            wait_serial "$x" "$t" "^fill: done" 600
            j=$(ckpt "$x" "$t" --mode "$m")
            jq -r --arg m "$x" --arg s "$size" --arg r "$r" '[$m, $s, $r, .stopped_us / 1000, .seal_us / 1000,
                .mem_save_us / 1000, .store_us / 1000, .wall_us / 1000, (.delta_bytes / 1048576 * 100 | round / 100),
                (.uploaded_bytes / 1048576 * 100 | round / 100)] | @csv' <<<"$j" | tr -d '"' >>"$F"
            vk "$x" rm "$t" >/dev/null
        done
        say "fig4: $size MiB, run $r"
    done
done
say "fig4: $F"
