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
read -r BASE DELTA MEM <<<"${EVAL_T2_MIBS:-$([ "$QUICK" = 1 ] && echo "16 8 8" || echo "512 128 128")}"
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
cold() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
F=$OUT/table2.csv
echo "link,store,run,store_s,stored_mib,restore_one_s,restore_two_wall_s,restore_two_a_s,restore_two_b_s" >"$F"
k=0
for r in $(seq "$RUNS"); do
    for link in lo net; do
        eval "IN=\$IN_$link"
        for s in dir ftp sftp rados1 rados2 rados3; do
            [ "$link" = net ] && [ "$s" = dir ] && continue # local only
            k=$((k + 1)); pool=t2p$k; U=$(uri "$link" "$s" "$pool")
            sync
            $IN "$B/store_bench" putset "$U" "$W/A.base" "$W/A.delta" "$W/A.mem" >"$W/A.json" || die "putset $s ($link)"
            $IN "$B/store_bench" putset "$U" "$W/B.base" "$W/B.delta" "$W/B.mem" >"$W/B.json" || die "putset $s ($link)"
            cold
            one=$($IN "$B/store_bench" getset "$U" "$W/A.json" | jq .seconds)
            cold
            t0=$(date +%s.%N)
            $IN "$B/store_bench" getset "$U" "$W/A.json" >"$W/ra" &
            $IN "$B/store_bench" getset "$U" "$W/B.json" >"$W/rb" &
            wait
            two=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')
            echo "$link,$s,$r,$(jq .seconds "$W/A.json"),$(jq '.stored / 1048576 * 100 | round / 100' "$W/A.json"),$one,$two,$(jq .seconds "$W/ra"),$(jq .seconds "$W/rb")" >>"$F"
            drop "$link" "$s" "$pool"
            say "table2: $s over $link, run $r"
        done
    done
done
say "table2: $F"
