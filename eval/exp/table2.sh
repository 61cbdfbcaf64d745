#!/bin/bash
# Table II and Figure 8: storing one checkpoint (base, delta, memory: 768 MiB
# by default, EVAL_T2_MIBS="512 128 128"; the paper's was 1496 MiB) into each store, then restoring it alone,
# then two checkpoints of two tasks restored at the same moment (the paper's
# two tasks resumed after their node died), with a cold page cache. Stores:
# the directory store (local disk), FTP (vsftpd), SFTP (OpenSSH), Ceph RADOS
# with 1, 2 and 3 replicas (3 OSDs); every server is real and started here,
# once on this host's loopback and once in a network namespace whose link is
# shaped to 1 Gbit/s (tc tbf), where replication and the network cost what
# they cost between hosts (the directory store is local only). RUNS times.
source "$(dirname "$0")/../lib.sh"
read -r BASE DELTA MEM <<<"${EVAL_T2_MIBS:-$([ "$QUICK" = 1 ] && echo "4 2 2" || echo "512 128 128")}"
RATE=${EVAL_RATE:-1gbit}
NSN=vkt2-$$
shaped_ns "$NSN" "$RATE"
for t in A B; do
    seed=$([ $t = A ] && echo 1 || echo 2)
    "$B/store_bench" mkfile "$W/$t.base" "$BASE" 100 text "$seed" >/dev/null
    "$B/store_bench" mkfile "$W/$t.delta" "$DELTA" 100 random "$seed" >/dev/null
    "$B/store_bench" mkfile "$W/$t.mem" "$MEM" 50 text "$((seed + 10))" >/dev/null
done
# servers: on loopback (link "lo") and in the shaped namespace (link "1gbit")
IN_lo=; IN_net="ip netns exec $NSN"
for link in lo net; do
    eval "IN=\$IN_$link"
    # (each server on a free port, as an account of its own)
    $IN "$ROOT/scripts/servers.sh" start ftp "$W/$link-ftp" >"$W/$link.ftp.uri" || die "vsftpd"
    at_exit "$IN $ROOT/scripts/servers.sh stop ftp $W/$link-ftp"
    $IN "$ROOT/scripts/servers.sh" start sftp "$W/$link-sftp" >"$W/$link.sftp.uri" || die "sshd"
    at_exit "$IN $ROOT/scripts/servers.sh stop sftp $W/$link-sftp"
    ns=; [ "$link" = net ] && ns=$NSN
    # the two clusters start side by side (each takes its time to make its OSDs)
    at_exit "VMCKPT_CEPH_NETNS=$ns $ROOT/scripts/ceph.sh stop $W/$link-ceph"
    VMCKPT_CEPH_NETNS=$ns VMCKPT_CEPH_OSD_GIB=${EVAL_CEPH_OSD_GIB:-16} "$ROOT/scripts/ceph.sh" start "$W/$link-ceph" >/dev/null &
    eval "CEPH_$link=\$!"
done
wait "$CEPH_lo" || die "Ceph on loopback"
wait "$CEPH_net" || die "Ceph in the shaped namespace"
uri() { # uri LINK STORE POOL
    case $2 in
    dir) echo "file://$W/dirstore-$3" ;;
    ftp | sftp) cat "$W/$1.$2.uri" ;;
    rados*) echo "$("$ROOT/scripts/ceph.sh" uri "$W/$1-ceph" "$3" "${2#rados}")&timeout=120" ;;
    esac
}
drop() { # frees what the store holds
    case $2 in
    dir) rm -rf "$W/dirstore-$3" ;;
    ftp | sftp) rm -rf "${W:?}/$1-$2/root"/* ;;
    rados*) VMCKPT_CEPH_NETNS=$([ "$1" = net ] && echo "$NSN") bash -c "\${VMCKPT_CEPH_NETNS:+ip netns exec \$VMCKPT_CEPH_NETNS} ceph -c '$W/$1-ceph/ceph.conf' osd pool delete '$3' '$3' --yes-i-really-really-mean-it" >/dev/null 2>&1 || true ;;
    esac
}
# (The quick form keeps the page cache and syncs nothing: its numbers prove
# the script runs, they are not measurements, and each drop or sync made the
# experiments beside it wait for the disk or read their programs again.)
cold() { [ "$QUICK" = 1 ] && return 0; sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
one_store() { # one_store LINK STORE RUN: a row of the table
    local link=$1 s=$2 r=$3 IN pool U one two t0
    eval "IN=\$IN_$link"
    pool=t2-$link-$s-$r; U=$(uri "$link" "$s" "$pool")
    [ "$QUICK" = 1 ] || sync
    $IN "$B/store_bench" putset "$U" "$W/A.base" "$W/A.delta" "$W/A.mem" >"$W/$pool.A.json" || die "putset $s ($link)"
    $IN "$B/store_bench" putset "$U" "$W/B.base" "$W/B.delta" "$W/B.mem" >"$W/$pool.B.json" || die "putset $s ($link)"
    cold
    one=$($IN "$B/store_bench" getset "$U" "$W/$pool.A.json" | jq .seconds)
    cold
    t0=$(date +%s.%N)
    $IN "$B/store_bench" getset "$U" "$W/$pool.A.json" >"$W/$pool.ra" &
    $IN "$B/store_bench" getset "$U" "$W/$pool.B.json" >"$W/$pool.rb" &
    wait
    two=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')
    echo "$link,$s,$r,$(jq .seconds "$W/$pool.A.json"),$(jq '.stored / 1048576 * 100 | round / 100' "$W/$pool.A.json"),$one,$two,$(jq .seconds "$W/$pool.ra"),$(jq .seconds "$W/$pool.rb")"
    drop "$link" "$s" "$pool"
    say "table2: $s over $link, run $r"
}
one_link() { # one_link LINK RUN: its rows, store after store
    local s
    for s in dir ftp sftp rados1 rados2 rados3; do
        [ "$1" = net ] && [ "$s" = dir ] && continue # local only
        one_store "$1" "$s" "$2" || return 1
    done
}
F=$OUT/table2.csv
echo "link,store,run,store_s,stored_mib,restore_one_s,restore_two_wall_s,restore_two_a_s,restore_two_b_s" >"$F"
for r in $(seq "$RUNS"); do
    if [ "$QUICK" = 1 ]; then
        # the two links side by side (their servers are apart), as a check
        # that both work, in half the time
        one_link lo "$r" >"$W/rows.lo" & lo=$!
        one_link net "$r" >"$W/rows.net" & net=$!
        wait "$lo" || die "table2 over lo"
        wait "$net" || die "table2 over net"
        cat "$W/rows.lo" "$W/rows.net" >>"$F"
    else
        for link in lo net; do one_link "$link" "$r" >>"$F" || die "table2 over $link"; done
    fi
done
say "table2: $F"
