#!/bin/bash
# A real, small Ceph cluster for the tests, demos and benchmarks: one monitor
# and three OSDs (BlueStore on sparse files) on 127.0.0.1, cephx on, pools
# replicated over OSDs (all are on this one host). No manager: object I/O does
# not need one; `ceph -s` then warns "no active mgr", which is expected.
#
#   scripts/ceph.sh start DIR [MON_PORT]   prints the ceph.conf path (MON_PORT:
#                                          a free one when missing or 'auto')
#   scripts/ceph.sh stop DIR
#   scripts/ceph.sh kill DIR               kill -9 of every daemon (a crash)
#   scripts/ceph.sh kill-osd DIR N         kill -9 of osd.N (fault tests)
#   scripts/ceph.sh start-osd DIR N        starts osd.N again
#   scripts/ceph.sh uri DIR POOL REPLICAS  the vmckpt store URI of a pool
#
# Memory: each OSD is held to a small cache (settings below); the cluster
# uses about 1 GiB in all. Start-up takes ~15-30 s on two cores. A start that
# fails says at which step and why, and ends the daemons it started.
set -eEuo pipefail
cmd=${1:?usage: ceph.sh start|stop|kill-osd|start-osd|uri DIR ...}
dir=${2:?usage: ceph.sh start|stop|kill-osd|start-osd|uri DIR ...}
NOSD=${VMCKPT_CEPH_OSDS:-3}
# Where the daemons listen: 127.0.0.1 by default; the fail-over tests run the
# cluster inside a network namespace of their own (VMCKPT_CEPH_NETNS) on a
# bridge address (VMCKPT_CEPH_ADDR, VMCKPT_CEPH_NET) that the nodes' namespaces reach.
ADDR=${VMCKPT_CEPH_ADDR:-127.0.0.1}
NET=${VMCKPT_CEPH_NET:-127.0.0.0/8}
IN=${VMCKPT_CEPH_NETNS:+ip netns exec $VMCKPT_CEPH_NETNS}
conf=$dir/ceph.conf
C() { $IN ceph -c "$conf" --connect-timeout 10 "$@"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
    local port=$1 fsid=$2
    cat > "$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:$ADDR:$port
public network = $NET
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$cluster-\$name.asok
log file = $dir/log/\$cluster-\$name.log
pid file = $dir/run/\$name.pid
ms bind ipv6 = false
ms bind msgr1 = false
# one host: replicas go to different OSDs, and an OSD's own peers may report it down
osd crush chooseleaf type = 0
osd pool default size = 3
osd pool default min size = 2
osd pool default pg num = 16
osd pool default pgp num = 16
mon allow pool delete = true
mon allow pool size one = true
mon warn on pool no redundancy = false
mon osd min down reporters = 1
mon osd reporter subtree level = osd
osd heartbeat interval = 1
osd heartbeat grace = 5
mon osd down out interval = 0
mon data avail warn = 1
mon data avail crit = 0
[mon]
mon data = $dir/mon
keyring = $dir/mon/keyring
[osd]
osd data = $dir/osd\$id
keyring = $dir/osd\$id/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $(( ${VMCKPT_CEPH_OSD_GIB:-4} << 30 ))
bluestore cache autotune = false
bluestore cache size = 67108864
osd memory target = 268435456
osd op num shards = 1
osd op num threads per shard = 2
EOF
}

. "$(dirname "${BASH_SOURCE[0]}")/port.sh"

start_failed() { # ERR trap of start: what failed, then no daemon left behind
    local rc=$? line=$1 what=$2
    trap - ERR
    echo "ceph.sh: starting the cluster in $dir failed (exit $rc at line $line: $what); logs in $dir/log" >&2
    tail -n 5 "$dir/log/daemons.log" "$dir/log/mkfs.log" 2>/dev/null | sed 's/^/    /' >&2 || true
    stop
    exit 1
}

make_osd() { # makes osd.$1 once (its key made here, given to the monitor with it), then starts it
    local i=$1 uuid
    if [ ! -f "$dir/osd$i/done" ]; then
        [ -f "$dir/osd$i.uuid" ] || cat /proc/sys/kernel/random/uuid > "$dir/osd$i.uuid"
        uuid=$(cat "$dir/osd$i.uuid")
        rm -rf "$dir/osd$i"
        mkdir -p "$dir/osd$i"
        ceph-authtool --create-keyring "$dir/osd$i/keyring" --gen-key -n "osd.$i" >/dev/null
        # (idempotent with the same uuid, id and key)
        printf '{"cephx_secret": "%s"}' "$(ceph-authtool -p -n "osd.$i" "$dir/osd$i/keyring")" > "$dir/osd$i/secret.json"
        C osd new "$uuid" "$i" -i "$dir/osd$i/secret.json" >/dev/null 2>>"$dir/log/mkfs.log"
        $IN ceph-osd -c "$conf" -i "$i" --mkfs --osd-uuid "$uuid" --no-mon-config \
            >>"$dir/log/mkfs.log" 2>&1 || { echo "ceph.sh: mkfs of osd.$i failed; see $dir/log/mkfs.log" >&2; return 1; }
        touch "$dir/osd$i/done"
    fi
    pid_alive "$dir/run/osd.$i.pid" || $IN ceph-osd -c "$conf" -i "$i" 2>>"$dir/log/daemons.log"
}

start() {
    local port=${1:-auto} fsid
    trap 'start_failed "$LINENO" "$BASH_COMMAND"' ERR
    [ "$port" = auto ] && port=$(pick_port $IN)
    for b in ceph-mon ceph-osd ceph-authtool monmaptool ceph; do
        command -v "$b" >/dev/null || { echo "ceph.sh: $b is not installed (scripts/setup.sh)" >&2; exit 1; }
    done
    mkdir -p "$dir/run" "$dir/log"
    if [ ! -f "$dir/mon/done" ]; then # first start: make the cluster
        rm -rf "$dir/mon" "$dir"/osd*
        fsid=$(cat /proc/sys/kernel/random/uuid)
        write_conf "$port" "$fsid"
        ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
        ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
            --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
        ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null
        monmaptool --create --addv a "[v2:$ADDR:$port]" --fsid "$fsid" "$dir/monmap" >/dev/null
        $IN ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
        touch "$dir/mon/done"
    fi
    pid_alive "$dir/run/mon.a.pid" || $IN ceph-mon -c "$conf" -i a 2>>"$dir/log/daemons.log"
    # The OSDs are made and started side by side: one after the other, each
    # mkfs and start took ~3 s, and each Python ask ~1 s of CPU.
    local pids=() i
    for i in $(seq 0 $((NOSD - 1))); do
        ( trap - ERR; make_osd "$i" ) &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { echo "ceph.sh: osd.$i could not be made or started; see $dir/log/mkfs.log and $dir/log/daemons.log" >&2; false; }
    done
    # Ready when every OSD is up. (Each ask is a Python program that costs
    # a good part of a CPU second: once a second, not more.)
    for _ in $(seq 60); do
        [ "$(C osd stat -f json 2>/dev/null | jq -r .num_up_osds)" = "$NOSD" ] && { echo "$conf"; return 0; }
        sleep 1
    done
    echo "ceph.sh: the OSDs did not come up; see $dir/log" >&2
    C -s >&2 || true
    false # the ERR trap: stop what started, and fail
}

stop() {
    local f
    for f in "$dir"/run/osd.*.pid "$dir"/run/mon.*.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        local alive=0
        for f in "$dir"/run/*.pid; do pid_alive "$f" && alive=1; done
        [ $alive = 0 ] && return 0
        sleep 0.2
    done
    for f in "$dir"/run/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
}

case $cmd in
start) start "${3:-}" ;;
stop) stop ;;
kill) for f in "$dir"/run/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done ;;
kill-osd) kill -9 "$(cat "$dir/run/osd.${3:?N}.pid")" ;;
start-osd) $IN ceph-osd -c "$conf" -i "${3:?N}" 2>>"$dir/log/daemons.log" ;;
uri) echo "rados://${3:?POOL}?conf=$conf&id=admin&keyring=$dir/keyring&replicas=${4:-3}" ;;
*) echo "usage: ceph.sh start|stop|kill|kill-osd|start-osd|uri DIR ..." >&2; exit 2 ;;
esac
