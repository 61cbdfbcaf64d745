#!/bin/bash
# The figures of eval/results as PNGs (gnuplot, pngcairo): each point the
# median of its runs with a bar from the least to the most; the paper's
# method measured here and ours in distinct colours and line styles; the
# paper's own numbers, where its text gives them, as separate points; a
# caption with the machine and the date. Usage: eval/plot.sh [RESULTS_DIR]
set -euo pipefail
OUT=${1:-$(cd "$(dirname "$0")" && pwd)/results}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot is not installed (scripts/setup.sh)" >&2; exit 1; }
CAPTION=$(cat "$OUT/machine.txt" 2>/dev/null || echo "this machine")

# agg CSV "FILTER" KEYS VAL: lines "KEY... MEDIAN MIN MAX N" for the rows of
# CSV (header skipped) that match the awk condition FILTER, grouped by the
# columns KEYS (comma separated numbers), of column VAL; sorted by the keys.
agg() {
    awk -F, -v keys="$3" -v val="$4" "NR > 1 && ($2)"' {
        n = split(keys, k, ","); key = ""
        for (i = 1; i <= n; i++) key = key (i > 1 ? "\t" : "") $k[i]
        print key "\t" $val }' "$1" | sort -t$'\t' -k1,1g -k2,2g -k3,3g |
    awk -F'\t' '{ key = $1; for (i = 2; i < NF; i++) key = key "\t" $i
        if (key != last && NR > 1) flush()
        last = key; v[++m] = $NF }
        function flush(  a, i, j, t) {
            for (i = 1; i <= m; i++) a[i] = v[i]
            for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
            print last "\t" med "\t" a[1] "\t" a[m] "\t" m; m = 0 }
        END { if (m) flush() }'
}
head_gp() { # head_gp PNG TITLE: terminal, title, caption
    cat <<EOF
set terminal pngcairo size 1100,700 font "DejaVu Sans,11"
set output "$1"
set title "$2\n{/*0.75 $CAPTION}"
set key below
set grid
set datafile separator "\t"
EOF
}
PAPER='lc rgb "#c0392b"'; OURS='lc rgb "#1f4e9c"'

# ---- Figure 3 -----------------------------------------------------------------------
if [ -s "$OUT/fig3.csv" ]; then
    for m in paper ours; do for c in 4:stopped 8:wall 6:memsave 7:store; do
        agg "$OUT/fig3.csv" "\$1 == \"$m\"" 2 "${c%%:*}" >"$T/f3.$m.${c#*:}"
    done; done
    { head_gp "$OUT/fig3.png" "Figure 3: a checkpoint against guest memory (memory half filled, rewritten)"
      cat <<EOF
set logscale xy 2
set xlabel "guest memory (MiB)"; set ylabel "time (ms, log scale)"
set logscale y 10
set format y "%g"
plot "$T/f3.paper.stopped" u 1:2:3:4 w yerrorlines $PAPER lw 2 pt 7 t "paper's method here: VM stopped", \
     "$T/f3.paper.wall" u 1:2:3:4 w yerrorlines $PAPER lw 1 dt 2 pt 5 t "paper's method here: whole checkpoint", \
     "$T/f3.ours.stopped" u 1:2:3:4 w yerrorlines $OURS lw 2 pt 9 t "ours: VM stopped", \
     "$T/f3.ours.wall" u 1:2:3:4 w yerrorlines $OURS lw 1 dt 2 pt 11 t "ours: whole checkpoint (VM running)", \
     "-" u 1:2 w points pt 3 ps 2 lc rgb "black" t "paper (Table III: 46 s stopped / 5 checkpoints, 256 MiB)"
256	9200
e
EOF
    } | gnuplot
fi

# ---- Figure 4 -----------------------------------------------------------------------
if [ -s "$OUT/fig4.csv" ]; then
    for m in paper ours; do for c in 4:stopped 8:wall; do
        agg "$OUT/fig4.csv" "\$1 == \"$m\"" 2 "${c%%:*}" | awk -F'\t' -v OFS='\t' '{ $2 /= 1000; $3 /= 1000; $4 /= 1000; print }' >"$T/f4.$m.${c#*:}"
    done; done
    { head_gp "$OUT/fig4.png" "Figure 4: a checkpoint against the user disk's fresh writes (128 MiB guest)"
      cat <<EOF
set xlabel "fresh data written to the disk since the last checkpoint (MiB)"; set ylabel "time (s)"
plot "$T/f4.paper.stopped" u 1:2:3:4 w yerrorlines $PAPER lw 2 pt 7 t "paper's method here: VM stopped", \
     "$T/f4.paper.wall" u 1:2:3:4 w yerrorlines $PAPER lw 1 dt 2 pt 5 t "paper's method here: whole checkpoint", \
     "$T/f4.ours.stopped" u 1:2:3:4 w yerrorlines $OURS lw 2 pt 9 t "ours: VM stopped", \
     "$T/f4.ours.wall" u 1:2:3:4 w yerrorlines $OURS lw 1 dt 2 pt 11 t "ours: whole checkpoint (VM running)"
EOF
    } | gnuplot
fi

# ---- Figure 5 -----------------------------------------------------------------------
if [ -s "$OUT/fig5.csv" ]; then
    { head_gp "$OUT/fig5.png" "Figure 5: storing a user disk x% filled with data, the rest zeros"
      echo 'set multiplot layout 2,2 margins 0.07,0.97,0.16,0.9 spacing 0.08,0.12 title "Figure 5: storing a user disk x% filled with data, the rest zeros\n{/*0.75 '"$CAPTION"'}"'
      echo 'set xlabel "disk filled with data (%)"; set ylabel "time to store (s)"'
      first=1
      for store in dir ftp1g; do for kind in random text; do
          for c in none zstd1 auto; do
              agg "$OUT/fig5.csv" "\$1 == \"$store\" && \$2 == \"$kind\" && \$4 == \"$c\"" 3 6 >"$T/f5.$store.$kind.$c"
          done
          where=$([ "$store" = dir ] && echo "local directory store" || echo "FTP over a 1 Gbit/s link")
          [ "$first" = 1 ] && echo 'set key at screen 0.5, screen 0.06 center horizontal' || echo 'unset key'
          first=0
          cat <<EOF
set title "$where, $kind data"
plot "$T/f5.$store.$kind.none" u 1:2:3:4 w yerrorlines $PAPER lw 2 pt 7 t "never compress (copy)", \
     "$T/f5.$store.$kind.zstd1" u 1:2:3:4 w yerrorlines lc rgb "#e67e22" lw 2 pt 5 t "always compress (zstd1, the paper's gzip)", \
     "$T/f5.$store.$kind.auto" u 1:2:3:4 w yerrorlines $OURS lw 2 pt 9 t "adaptive (ours)"
EOF
      done; done
      echo 'unset multiplot'
    } | gnuplot
fi

# ---- Figure 6 -----------------------------------------------------------------------
if [ -s "$OUT/fig6.csv" ]; then
    mems=$(awk -F, 'NR > 1 {print $2}' "$OUT/fig6.csv" | sort -un)
    plot_t= plot_b=
    for m in paper ours; do for mem in $mems; do
        agg "$OUT/fig6.csv" "\$1 == \"$m\" && \$2 == $mem" 4 5 | awk -F'\t' -v OFS='\t' '{ $2 /= 1000; $3 /= 1000; $4 /= 1000; print }' >"$T/f6.$m.$mem.t"
        agg "$OUT/fig6.csv" "\$1 == \"$m\" && \$2 == $mem" 4 7 >"$T/f6.$m.$mem.b"
        col=$([ "$m" = paper ] && echo "$PAPER" || echo "$OURS")
        name=$([ "$m" = paper ] && echo "paper's method here" || echo "ours")
        dt=$([ "$mem" = "$(echo "$mems" | head -n1)" ] && echo 1 || echo 2)
        plot_t="$plot_t${plot_t:+, }\"$T/f6.$m.$mem.t\" u 1:2:3:4 w yerrorlines $col dt $dt lw 2 t \"$name, $mem MiB\""
        plot_b="$plot_b${plot_b:+, }\"$T/f6.$m.$mem.b\" u 1:2:3:4 w yerrorlines $col dt $dt lw 2 notitle"
    done; done
    { head_gp "$OUT/fig6.png" "Figure 6: a series of checkpoints into an empty store (the first stores the base too)"
      echo 'set multiplot layout 2,1 margins 0.08,0.97,0.2,0.9 spacing 0.1 title "Figure 6: a series of checkpoints into an empty store (the first stores the base too)\n{/*0.75 '"$CAPTION"'}"'; echo 'unset title'
      echo 'set xlabel "checkpoint"; set ylabel "time, request to commit (s)"; set xtics 1'
      echo "plot $plot_t"
      echo 'unset title; set ylabel "stored (MiB)"'
      echo "plot $plot_b"
      echo 'unset multiplot'
    } | gnuplot
fi

# ---- Figure 7 -----------------------------------------------------------------------
if [ -s "$OUT/fig7.csv" ]; then
    p=
    for s in whole-ftp whole-ceph delta-ftp delta-ceph; do
        agg "$OUT/fig7.csv" "\$1 == \"$s\"" 3 4 >"$T/f7.$s"
        col=$([ "${s%%-*}" = whole ] && echo "$PAPER" || echo "$OURS")
        dt=$([ "${s#*-}" = ftp ] && echo 1 || echo 2)
        name=$([ "${s%%-*}" = whole ] && echo "whole (paper's method)" || echo "delta (ours)")
        p="$p${p:+, }\"$T/f7.$s\" u 1:2:3:4 w yerrorlines $col dt $dt lw 2 t \"$name, $([ "${s#*-}" = ftp ] && echo FTP || echo "Ceph, 3 replicas")\""
    done
    { head_gp "$OUT/fig7.png" "Figure 7: each checkpoint of the task, four set-ups (seal + memory save + store)"
      echo 'set xlabel "checkpoint"; set ylabel "time (s)"; set xtics 1'
      echo "plot $p"
    } | gnuplot
fi

# ---- Figure 8 (Table II) ------------------------------------------------------------
if [ -s "$OUT/table2.csv" ]; then
    for link in lo net; do # x: the stores in this order
        : >"$T/f8.$link"; i=0
        for st in dir ftp sftp rados1 rados2 rados3; do
            one=$(agg "$OUT/table2.csv" "\$1 == \"$link\" && \$2 == \"$st\"" 2 6 | cut -f2-4)
            two=$(agg "$OUT/table2.csv" "\$1 == \"$link\" && \$2 == \"$st\"" 2 7 | cut -f2-4)
            [ -n "$one" ] || continue
            printf '%d\t%s\t%s\t%s\n' "$i" "$st" "$one" "$two" >>"$T/f8.$link"; i=$((i + 1))
        done
    done
    { head_gp "$OUT/fig8.png" "Figure 8: restoring checkpoints from each store, one alone and two at once"
      echo 'set multiplot layout 1,2 margins 0.07,0.97,0.2,0.9 spacing 0.08 title "Figure 8: restoring a checkpoint from each store, one alone and two at once (cold cache)\n{/*0.75 '"$CAPTION"'}"'
      echo 'set ylabel "time (s), log scale"; set logscale y; set style fill solid 0.6; set xtics rotate by -30; set xrange [-0.6:*]'
      for link in lo net; do
          [ "$link" = lo ] && echo 'set key at screen 0.5, screen 0.05 center horizontal' || echo 'unset key'
          echo "set title \"$([ "$link" = lo ] && echo "servers on this host's loopback" || echo "servers over a 1 Gbit/s link")\""
          echo "plot \"$T/f8.$link\" u (\$1 - 0.18):3:4:5:(0.35):xtic(2) w boxerrorbars $OURS t \"one restore\", \"$T/f8.$link\" u (\$1 + 0.18):6:7:8:(0.35) w boxerrorbars $PAPER t \"two at once (wall)\""
      done
      echo 'unset multiplot'
    } | gnuplot
fi

# ---- Figure 9 -----------------------------------------------------------------------
if [ -s "$OUT/fig9.csv" ]; then
    awk -F, 'NR > 1 && $5 != "" {print $1 "\t" $5}' "$OUT/fig9.csv" >"$T/f9.ev"
    { head_gp "$OUT/fig9.png" "Figure 9: the use case: each node's CPU use, node a killed, the task resumed"
      echo 'set datafile separator ","; set xlabel "time from the task'"'"'s start (s)"; set ylabel "CPU (% of one core)"'
      echo 'set yrange [0:*]'
      awk -F'\t' '{ printf "set arrow from %s, graph 0 to %s, graph 1 nohead lc rgb \"#888888\" dt 3\n", $1, $1
                     printf "set label \"%s\" at %s, graph %.2f rotate by 90 font \",8\" tc rgb \"#444444\" offset 0.3,0\n", $2, $1, 0.55 - (NR % 3) * 0.15 }' "$T/f9.ev"
      echo "plot \"$OUT/fig9.csv\" u 1:2 w fsteps lw 2 lc rgb \"#c0392b\" t \"node a\", \"\" u 1:3 w fsteps lw 2 lc rgb \"#1f4e9c\" t \"node b\", \"\" u 1:4 w fsteps lw 2 lc rgb \"#27ae60\" t \"node c\""
    } | gnuplot
fi
ls "$OUT"/*.png 2>/dev/null | sed 's/^/plot.sh: /'
