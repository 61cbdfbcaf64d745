#!/bin/bash
# Data-path benchmarks (one run, ratios; the machine is shared and noisy):
#  1. bytes stored by checkpoints 1..5 of a 256 MiB `cpu` guest: this design
#     (chunks, dedup, adaptive compression) vs the paper's "whole memory + whole
#     delta every time" (data.mode=whole); and the chunk size (16..128 KiB).
#  2. the paper's Figure 5: an 800 MiB delta, 0-100% filled with incompressible
#     data (the rest zeros), stored with never-compress, always-compress (zstd3,
#     lz4) and the adaptive policy.
#  3. throughput of the directory store vs plain cp + sync of the same bytes.
# Usage: bench/data_path.sh [BUILD_DIR]   Settings: BENCH_MEMORY (256), BENCH_ACCEL (tcg),
#        BENCH_PARTS ("1 2 3"), BENCH_FIG5_MIB (800), BENCH_FIG5_ROUNDS (9)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/rel}
MEMORY=${BENCH_MEMORY:-256}; ACCEL=${BENCH_ACCEL:-tcg}; PARTS=${BENCH_PARTS:-1 2 3}
FIG5_MIB=${BENCH_FIG5_MIB:-800}; FIG5_ROUNDS=${BENCH_FIG5_ROUNDS:-9}
D=$(mktemp -d /var/tmp/vmckpt-bench.XXXXXX)   # on disk, not tmpfs
G=$(pwd)/build/guest
AGENT=
cleanup() { [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null; pkill -9 -f "$D/" 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
mib() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1048576}'; }

# series MODE CHUNK_KIB: prints "uploaded_bytes" of checkpoints 1..5, one per line.
# The paper's mode stores memory uncompressed (it compressed only the delta).
series() {
    local mode=$1 kib=$2 dir=$D/series-$1-$2 codec=auto
    [ "$mode" = whole ] && codec=none
    "$B/vmckptd" --state-dir "$dir" --set "qemu.accel=$ACCEL" --set "data.mode=$mode" \
        --set "data.chunk_kib=$kib" --set "data.codec=$codec" >"$dir.log" 2>&1 &
    AGENT=$!
    local vk="$B/vmckpt --socket $dir/vmckptd.sock"
    for _ in $(seq 50); do $vk status >/dev/null 2>&1 && break; sleep 0.1; done
    $vk run s --base "$G/base.qcow2" --kernel "$G/vmlinuz" --initrd "$G/initrd.img" \
        --work cpu:1000000 --memory "$MEMORY" >/dev/null
    local S; S=$($vk --json status s | jq -r .serial_log)
    for _ in $(seq 300); do grep -aq "cpu: step" "$S" && break; sleep 0.1; done
    for i in 1 2 3 4 5; do
        sleep 3
        $vk --json checkpoint s | jq .uploaded_bytes
    done
    echo "objects $(cat "$dir"/store/packidx/* 2>/dev/null | jq '.records | length' | awk '{s += $1} END {print s + 0}') $(find "$dir/store/packs" -type f 2>/dev/null | wc -l)"
    $vk rm s >/dev/null
    kill "$AGENT"; wait "$AGENT" 2>/dev/null || true; AGENT=
    rm -rf "$dir"
}

if [[ " $PARTS " == *" 1 "* ]]; then
    echo "== 1. Bytes stored per checkpoint, $MEMORY MiB guest running 'cpu', a checkpoint every 3 s"
    series whole 32 > "$D/whole"
    series dedup 32 > "$D/dedup"
    echo
    echo "| checkpoint | whole memory + delta (paper) | this design | this design, % of guest memory |"
    echo "|---|---|---|---|"
    for i in 1 2 3 4 5; do
        w=$(sed -n "${i}p" "$D/whole"); d=$(sed -n "${i}p" "$D/dedup")
        printf '| %d | %s MiB | %s MiB | %s%% |\n' "$i" "$(mib "$w")" "$(mib "$d")" \
            "$(awk -v d="$d" -v m="$MEMORY" 'BEGIN {printf "%.1f", d * 100 / (m * 1048576)}')"
    done
    worst=$(sed -n '2,5p' "$D/dedup" | sort -n | tail -n1)
    pct=$(awk -v d="$worst" -v m="$MEMORY" 'BEGIN {printf "%.1f", d * 100 / (m * 1048576)}')
    awk -v p="$pct" 'BEGIN {exit !(p <= 30)}' && echo "target: checkpoints 2-5 <= 30% of memory: met (largest $pct%)" \
        || echo "target: checkpoints 2-5 <= 30% of memory: MISSED (largest $pct%)"
    echo
    echo "Chunk size (this design): bytes added by checkpoints 2-5, chunks stored and the pack objects holding them"
    echo "| average chunk | checkpoints 2-5 added | chunks stored | pack objects |"
    echo "|---|---|---|---|"
    for kib in 16 32 64 128; do
        series dedup "$kib" > "$D/c$kib"
        sum=$(sed -n '2,5p' "$D/c$kib" | awk '{s += $1} END {print s}')
        printf '| %d KiB | %s MiB | %s | %s |\n' "$kib" "$(mib "$sum")" "$(grep objects "$D/c$kib" | awk '{print $2}')" \
            "$(grep objects "$D/c$kib" | awk '{print $3}')"
    done
    echo
fi

if [[ " $PARTS " == *" 2 "* ]]; then
    echo "== 2. Figure 5: storing a $FIG5_MIB MiB delta, x% incompressible data, the rest zeros (seconds, median of $FIG5_ROUNDS interleaved rounds)"
    echo "| filled | never compress | always zstd3 | always lz4 | adaptive | adaptive vs best fixed |"
    echo "|---|---|---|---|---|---|"
    ok=1
    for fill in 0 20 40 60 80 100; do
        "$B/store_bench" mkfile "$D/delta.img" "$FIG5_MIB" "$fill" random
        # Rounds, each running the four columns in turn, so that the machine's
        # slow spells (it is shared) hit every column alike; the median of each.
        for codec in none zstd3 lz4 auto; do : > "$D/t.$codec"; done
        for rep in $(seq "$FIG5_ROUNDS"); do
            for codec in none zstd3 lz4 auto; do
                rm -rf "$D/fig5"; sync
                "$B/store_bench" put "file://$D/fig5" "$D/delta.img" "$codec" | jq .seconds >> "$D/t.$codec"
            done
        done
        row=()
        for codec in none zstd3 lz4 auto; do
            row+=("$(sort -g "$D/t.$codec" | sed -n "$(( (FIG5_ROUNDS + 1) / 2 ))p")")
        done
        best=$(printf '%s\n' "${row[@]:0:3}" | sort -g | head -n1)
        rel=$(awk -v a="${row[3]}" -v b="$best" 'BEGIN {printf "%+.1f%%", (a / b - 1) * 100}')
        awk -v a="${row[3]}" -v b="$best" 'BEGIN {exit !(a <= b * 1.05 || a - b < 0.1)}' || ok=0
        printf '| %d%% | %.2f | %.2f | %.2f | %.2f | %s |\n' "$fill" "${row[@]}" "$rel"
    done
    rm -rf "$D/fig5" "$D/delta.img"
    [ "$ok" = 1 ] && echo "target: adaptive within 5% (or 0.1 s) of the best fixed choice at every point: met" \
        || echo "target: adaptive within 5% (or 0.1 s) of the best fixed choice at every point: MISSED"
    echo
fi

if [[ " $PARTS " == *" 3 "* ]]; then
    # Three ways of putting the same 800 MiB on the same disk, interleaved:
    #  cp + sync;  the upload stage alone (the bytes written as 8 MiB pack-sized
    #  objects through the directory store, 2 threads, synced);  the whole data
    #  path (that plus content-defined chunking, SHA-256 of every chunk, the
    #  codec policy and packing), which is CPU-bound on a small machine.
    echo "== 3. Directory store throughput vs cp + sync, 800 MiB of incompressible data, 5 rounds"
    "$B/store_bench" mkfile "$D/src.img" 800 100 random
    : > "$D/cp"; : > "$D/up"; : > "$D/st"
    for round in 1 2 3 4 5; do
        rm -rf "$D/cpdst" "$D/up3" "$D/st3"; mkdir "$D/cpdst"; sync
        t0=$(date +%s.%N); cp "$D/src.img" "$D/cpdst/"; sync -f "$D/cpdst/src.img"; t1=$(date +%s.%N)
        echo "$t1 - $t0" | bc >> "$D/cp"
        rm -rf "$D/cpdst"; sync
        "$B/store_bench" upload "file://$D/up3" "$D/src.img" | jq .seconds >> "$D/up"
        rm -rf "$D/up3"; sync
        "$B/store_bench" put "file://$D/st3" "$D/src.img" auto | jq .seconds >> "$D/st"
    done
    med() { sort -g "$1" | sed -n 3p; }
    for f in cp up st; do echo "# $f: $(sort -g "$D/$f" | tr "\n" " ")"; done
    cpm=$(med "$D/cp"); upm=$(med "$D/up"); stm=$(med "$D/st")
    row() { printf '| %s | %.2f | %.0f | %.0f%% |\n' "$1" "$2" "$(echo "838.8608 / $2" | bc -l)" \
                   "$(echo "$cpm / $2 * 100" | bc -l)"; }
    echo "| copy | median seconds | MB/s | of cp |"
    echo "|---|---|---|---|"
    row "cp + sync" "$cpm"
    row "directory store upload (8 MiB pack objects, synced)" "$upm"
    row "whole data path (chunk, SHA-256, policy, pack, upload, sync)" "$stm"
    r=$(awk -v a="$cpm" -v b="$upm" 'BEGIN {printf "%.0f", a / b * 100}')
    [ "$r" -ge 80 ] && echo "target: directory store upload >= 80% of cp: met ($r%)" \
        || echo "target: directory store upload >= 80% of cp: MISSED ($r%)"
fi
