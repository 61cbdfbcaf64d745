#!/bin/bash
# Table I: the sizes of the parts of a VM (the test guest, 256 MiB as the
# paper's task), and what the first and a later checkpoint store, by the
# paper's method (whole memory and delta, compressed) and by ours.
source "$(dirname "$0")/../lib.sh"
MEM=256
both_agents
F=$OUT/table1.csv
for x in ours paper; do
    boot "$x" t "$MEM" counter
    m=$(mode_of "$x")
    ckpt "$x" t --mode "$m" >"$W/$x.1.json"
    sleep 3
    ckpt "$x" t --mode "$m" >"$W/$x.2.json"
    vk "$x" --json show t 1 >"$W/$x.show.json"
done
S=$W/ours.show.json
man=$(stat -c %s "$(ls "$W"/ours/store/tasks/t/manifests/* | head -n1)")
mib() { awk -v v="$1" 'BEGIN {printf "%.3f", v / 1048576}'; }
{
    echo "part,paper_mib,here_mib"
    echo "configuration file (manifest),0,$(mib "$man")"
    echo "ramdisk,5.3,$(mib "$(jq .initrd.size "$S")")"
    echo "kernel,1.6,$(mib "$(jq .kernel.size "$S")")"
    echo "base system,769,$(mib "$(jq .base.size "$S")")"
    echo "memory image (m = $MEM MiB),$((1 + MEM)),$(mib "$(jq .summary.memory_bytes "$S")")"
    echo "user disk delta (at checkpoint 1),8,$(mib "$(jq .summary.delta_bytes "$S")")"
    for x in paper ours; do
        name="paper's method here"; [ "$x" = ours ] && name="ours"
        echo "stored by checkpoint 1 - $name,$(awk -v m=$MEM 'BEGIN {print 5.3 + 1.6 + 769 + 1 + m + 8}'),$(mib "$(jq .uploaded_bytes "$W/$x.1.json")")"
        echo "stored by checkpoint 2 - $name,$((1 + MEM + 8)),$(mib "$(jq .uploaded_bytes "$W/$x.2.json")")"
    done
} >"$F"
say "table1: $F"
