#!/bin/bash
# Issue 17: the paper's evaluation in its quick form (`make eval QUICK=1`,
# eval/run.sh): every experiment runs, each writes its CSV, every figure is a
# PNG, and the report shows each table and figure with numbers taken from
# this run's CSVs.
. "$(dirname "$0")/lib.sh"
R=$T/results
# The release build (make all), as `make eval` runs: this test proves the
# scripts, and under ASan the experiments took twice the CPU (Figure 5: 25 s
# against 13) in a suite bound by its CPUs. The agents under ASan are every
# other integration test's.
REL=${EVAL_BIN:-build/rel}
[ -x "$REL/vmckptd" ] && [ -x "$REL/store_bench" ] || { not_ok "the release build is there ($REL: make all)"; finish; exit 1; }
# (the uncompressed kernel, as the other tests boot: a boot of the bzImage
# costs 3.3 CPU seconds more under TCG; no experiment restores a guest from
# FTP, which reads a kernel a small range at a time)
if EVAL_KERNEL=$GUEST/vmlinux EVAL_APPEND=$TEST_APPEND QUICK=1 EVAL_OUT="$R" EVAL_REPORT="$T/REPORT.md" bash eval/run.sh "$REL" >"$T/eval.log" 2>&1; then
    ok "make eval QUICK=1 runs every experiment ($(grep -o 'done in [0-9]* s' "$T/eval.log" | tail -n1))"
else
    not_ok "eval/run.sh (quick)" "$(tail -8 "$T/eval.log")"; finish; exit 1
fi
sed -n 's/^== eval: \(.* done in .*\)/# \1/p' "$T/eval.log" # where its minutes went
for c in table1 fig3 fig4 fig5 fig6 fig7 table3 table2 fig9 fig9_summary; do
    rows=$(($(wc -l <"$R/$c.csv" 2>/dev/null || echo 0) - 1))
    [ "$rows" -ge 1 ] && ! grep -q ',,\|nan\|null' <(cut -d, -f1-4 "$R/$c.csv") \
        && ok "$c.csv: $rows rows" || not_ok "$c.csv has rows and no empty fields" "$(head -3 "$R/$c.csv" 2>&1)"
done
for p in fig3 fig4 fig5 fig6 fig7 fig8 fig9; do
    [ "$(head -c 8 "$R/$p.png" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && [ "$(stat -c %s "$R/$p.png")" -gt 10000 ] \
        && ok "$p.png is a PNG ($(stat -c %s "$R/$p.png") bytes)" || not_ok "$p.png" "$(ls -la "$R/$p.png" 2>&1)"
done
grep -q "Skipping data file\|warning" "$T/eval.log" && not_ok "gnuplot had no complaint" "$(grep -m3 'Skipping\|warning' "$T/eval.log")" \
    || ok "gnuplot plotted every series"
REP=$T/REPORT.md
found=0; for h in "Table I" "Figure 3" "Figure 4" "Figure 5" "Figure 6" "Table III" "Figure 7" "Table II" "Figure 8" "Figure 9"; do
    grep -q "$h" "$REP" && found=$((found + 1))
done
[ "$found" = 10 ] && ok "the report has every table and figure" || not_ok "report sections" "$found of 10"
! grep -qi "nan\b\|n/a" "$REP" && ok "no number is missing from the report" || not_ok "numbers missing" "$(grep -i -m3 'nan\b\|n/a' "$REP")"
# the report's numbers are this run's: a value of each kind appears as the CSV has it
o2=$(awk -F, '$1 ~ /checkpoint 2 - ours/ {print $3}' "$R/table1.csv")
grep -q "| stored by checkpoint 2 - ours | 265 | $o2 |" "$REP" && ok "Table I in the report is this run's ($o2 MiB)" || not_ok "Table I from the CSV" "$o2"
s=$(awk -F, 'NR == 2 {print $2}' "$R/fig9_summary.csv")
grep -q "with checkpoints, a crash and the resume (s) | 3460 | $s |" "$REP" && ok "Figure 9's summary is this run's ($s s)" || not_ok "Figure 9 from the CSV" "$s"
grep -q "](results/fig3.png)\|]($(basename "$R")/fig3.png)" "$REP" && ok "the report links the PNGs beside it" || not_ok "PNG links" "$(grep -m2 'png' "$REP")"
finish
