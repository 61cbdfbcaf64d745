#!/bin/bash
# Figure 6: a series of N checkpoints (10; the paper's were 100 s apart, ours
# GAP s) of guests of several memory sizes, each with a quarter of its memory
# rewritten continuously (mem:N), into a store that holds nothing yet: the
# first checkpoint stores the base too. Time (request to commit) and bytes
# stored of each; the paper's method and ours; the series RUNS times.
source "$(dirname "$0")/../lib.sh"
MEMS=${EVAL_FIG6_MEMS:-$([ "$QUICK" = 1 ] && echo "128" || echo "256 1024")}
N=${EVAL_FIG6_N:-$([ "$QUICK" = 1 ] && echo 2 || echo 10)}
GAP=${EVAL_FIG6_GAP:-2}
F=$OUT/fig6.csv
echo "method,mem_mib,run,ckpt,wall_ms,stopped_ms,stored_mib" >"$F"
k=0
for r in $(seq "$RUNS"); do
    for mem in $MEMS; do
        for x in paper ours; do
            k=$((k + 1)); a=$x-$k
            if [ "$x" = paper ]; then agent "$a" "${PAPER_SET[@]}"; m=$PAPER_MODE; else agent "$a"; m=auto; fi
            boot "$a" t "$mem" "counter,mem:$((mem / 4))"
            wait_serial "$a" t "^mem: pass 1," 600
            for i in $(seq "$N"); do
                j=$(ckpt "$a" t --mode "$m")
                jq -r --arg m "$x" --arg mem "$mem" --arg r "$r" --arg i "$i" '[$m, $mem, $r, $i, .wall_us / 1000,
                    .stopped_us / 1000, (.uploaded_bytes / 1048576 * 100 | round / 100)] | @csv' <<<"$j" | tr -d '"' >>"$F"
                sleep "$GAP"
            done
            vk "$a" rm t >/dev/null 2>&1 || true
            agent_stop "$a"; rm -rf "${W:?}/$a"
            say "fig6: $mem MiB, $x, run $r"
        done
    done
done
say "fig6: $F"
