#!/bin/bash
# Figure 5: storing a user disk of SIZE MiB (400; the paper's was 800) filled to
# x% with data, the rest zeros: never compress, always compress (zstd1, the
# paper's gzip at its fastest level), and the adaptive policy. Two kinds of
# data (random: incompressible; text: compressible about 3x) and two stores:
# the local directory store, and FTP (vsftpd) over a link shaped to 1 Gbit/s
# (a network namespace whose loopback is limited with tc tbf), where
# compressing pays. Each point RUNS times, the codecs taking turns.
source "$(dirname "$0")/../lib.sh"
SIZE=${EVAL_FIG5_MIB:-$([ "$QUICK" = 1 ] && echo 16 || echo 400)}
FILLS=${EVAL_FIG5_FILLS:-$([ "$QUICK" = 1 ] && echo "0 100" || echo "0 25 50 75 100")}
RATE=${EVAL_RATE:-1gbit}
NSN=vke-$$
shaped_ns "$NSN" "$RATE"
FTP=$(ip netns exec "$NSN" "$ROOT/scripts/servers.sh" start ftp "$W/ftp") || die "cannot start vsftpd"
at_exit "ip netns exec $NSN $ROOT/scripts/servers.sh stop ftp $W/ftp"
F=$OUT/fig5.csv
echo "store,data,fill_pct,codec,run,seconds,stored_mib" >"$F"
for kind in random text; do
    for fill in $FILLS; do
        "$B/store_bench" mkfile "$W/disk.img" "$SIZE" "$fill" "$kind" >/dev/null
        for r in $(seq "$RUNS"); do
            for store in dir ftp1g; do
                for codec in none zstd1 auto; do
                    if [ "$store" = dir ]; then
                        rm -rf "$W/fig5"; sync
                        j=$("$B/store_bench" put "file://$W/fig5" "$W/disk.img" "$codec")
                    else
                        rm -rf "${W:?}/ftp/root"/*
                        j=$(ip netns exec "$NSN" "$B/store_bench" put "$FTP" "$W/disk.img" "$codec")
                    fi
                    echo "$store,$kind,$fill,$codec,$r,$(jq .seconds <<<"$j"),$(jq '.stored.new_bytes / 1048576 * 100 | round / 100' <<<"$j")" >>"$F"
                done
            done
        done
        say "fig5: $kind $fill%"
    done
done
rm -f "$W/disk.img"
say "fig5: $F"
