#!/bin/bash
# The paper's Table II on this machine: time to store one checkpoint of about
# 1.5 GiB (base image, delta, memory) through each store, one run; then two
# restores of different tasks at the same moment from each store (two
# processes, each fetching, decompressing and checking every chunk of its
# checkpoint: the reads a restore does). Restores start with a cold page cache
# (as on the node that takes over after a crash), when run as root.
#
# Every store is a real server on 127.0.0.1 started by the project's scripts:
# a Ceph cluster of 3 OSDs (pools of 1, 2 and 3 replicas), vsftpd, sshd.
# The checkpoint: base 1024 MiB (compressible text), delta 256 MiB
# (incompressible), memory 256 MiB (half compressible text, half zero pages).
# Usage: bench/stores.sh [BUILD_DIR]   Settings: BENCH_STORES (all by default)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/rel}
ROOT=$(pwd)
STORES=${BENCH_STORES:-dir ftp sftp rados1 rados2 rados3}
D=$(mktemp -d /var/tmp/vmckpt-stores.XXXXXX) # on disk, not tmpfs
chmod 755 "$D"
cleanup() {
    "$ROOT/scripts/servers.sh" stop ftp "$D/ftp" 2>/dev/null || true
    "$ROOT/scripts/servers.sh" stop sftp "$D/sftp" 2>/dev/null || true
    "$ROOT/scripts/ceph.sh" stop "$D/ceph" 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT

echo "== making two checkpoints of ~1.5 GiB (tasks A and B)"
for t in A B; do
    seed=$([ $t = A ] && echo 1 || echo 2)
    "$B/store_bench" mkfile "$D/$t.base" 1024 100 text "$seed"
    "$B/store_bench" mkfile "$D/$t.delta" 256 100 random "$seed"
    "$B/store_bench" mkfile "$D/$t.mem" 256 50 text "$((seed + 10))"
done

uri_of() {
    case $1 in
    dir) echo "file://$D/dir" ;;
    ftp) "$ROOT/scripts/servers.sh" start ftp "$D/ftp" ;;
    sftp) "$ROOT/scripts/servers.sh" start sftp "$D/sftp" ;;
    rados*)
        VMCKPT_CEPH_OSD_GIB=16 "$ROOT/scripts/ceph.sh" start "$D/ceph" >/dev/null
        echo "$("$ROOT/scripts/ceph.sh" uri "$D/ceph" "bench${1#rados}" "${1#rados}")&timeout=120" ;;
    esac
}
label() {
    case $1 in
    dir) echo "directory store (local disk)" ;;
    ftp) echo "FTP (vsftpd)" ;;
    sftp) echo "SFTP (OpenSSH)" ;;
    rados*) echo "Ceph RADOS, ${1#rados} replica(s)" ;;
    esac
}
drop() { # frees the space the store used
    case $1 in
    dir) rm -rf "$D/dir" ;;
    ftp | sftp) rm -rf "${D:?}/$1/root"/* ;;
    rados*) ceph -c "$D/ceph/ceph.conf" osd pool delete "bench${1#rados}" "bench${1#rados}" \
        --yes-i-really-really-mean-it >/dev/null 2>&1 || true ;;
    esac
}

# Restores are timed with nothing of the store in the page cache (the node
# taking over after a crash has none of it), when we may drop it (root).
cold() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; else WARM=1; fi
}
WARM=0

rows=()
for s in $STORES; do
    echo "== $(label "$s")"
    U=$(uri_of "$s")
    sync
    "$B/store_bench" putset "$U" "$D/A.base" "$D/A.delta" "$D/A.mem" > "$D/A.$s.json"
    "$B/store_bench" putset "$U" "$D/B.base" "$D/B.delta" "$D/B.mem" > "$D/B.$s.json"
    put=$(jq .seconds "$D/A.$s.json")
    stored=$(jq .stored "$D/A.$s.json")
    cold # as on the node that takes over after a crash
    one=$("$B/store_bench" getset "$U" "$D/A.$s.json" | jq .seconds)
    cold
    t0=$(date +%s.%N)
    "$B/store_bench" getset "$U" "$D/A.$s.json" > "$D/ra" &
    "$B/store_bench" getset "$U" "$D/B.$s.json" > "$D/rb" &
    wait
    two=$(echo "$(date +%s.%N) - $t0" | bc)
    rows+=("$(printf '| %s | %.2f | %.0f | %.2f | %.2f (%.2f / %.2f) |' "$(label "$s")" "$put" \
        "$(echo "$stored / 1048576" | bc)" "$one" "$two" "$(jq .seconds "$D/ra")" "$(jq .seconds "$D/rb")")")
    echo "${rows[-1]}"
    drop "$s"
done

echo
echo "Table II on this machine: one checkpoint of $(( (1024 + 256 + 256) )) MiB (base, delta, memory)"
[ "$WARM" = 0 ] && echo "(restores with a cold page cache)" || echo "(restores with a warm page cache: not root)"
echo "| store | store one checkpoint (s) | MiB written | one restore (s) | two restores at once, wall (each) (s) |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "The paper (1496 MiB, 2015 cluster): HDFS 3 replicas 53.2 s, 2 replicas 31.2 s, 1 replica 16.8 s,"
echo "FTP 18.6 s, SFTP 33.3 s, NFS 26.7 s."
