#!/bin/bash
# vmckpt against its peers on the data path (issue 16): casync, restic and
# borg, installed here from Debian packages (not by setup.sh).
#
# Images: for each image set, the test guest runs a workload and 5 memory
# images are taken 3 s apart (QEMU stopped, `migrate` to a file, resumed).
# Each round stores the images in order into a fresh repository of every
# system on local disk, interleaved per image (image 1 into every system,
# then image 2 ...) so the machine's noise hits all alike; then restores the
# last image from each with a cold page cache, checks its sha256, and drops
# it. Measured by /usr/bin/time and du, the same way for every system:
#   ingest: wall, CPU (user+sys) per image; bytes added to the repository
#   restore: wall (until the output is on disk: `sync` included, for all),
#            bytes read from disk (file system inputs), minor page faults, of
#            the whole process (loading the program included); for vmckpt
#            also within the restore alone, as the resident agent pays it
# Prints one markdown table per image set (medians of the rounds, min-max in
# brackets), writes every sample as CSV, and checks issue 16's targets.
#
# PEERS_NET=1: the same over a network store instead of local disk. A network
# namespace made here, its loopback shaped to PEERS_NET_RATE (1gbit, tbf;
# this kernel has no netem, so no added delay) holds an sshd
# (scripts/servers.sh) and every client: vmckpt over SFTP (its sftp:// store),
# restic over SFTP, borg over SSH (borg serve), casync over SSH (casync on the
# far side). Disk rows are then the server's business; the tables give the
# bytes that crossed the link instead (the loopback's counter).
# Usage: bench/peers.sh [BUILD_DIR]
# Settings: PEERS_ROUNDS (3), PEERS_SETS ("cpu:1000000 mem:24"), PEERS_MEM
#   (guest MiB, 128), PEERS_GAP_S (3), PEERS_ACCEL (tcg), PEERS_CSV (file),
#   PEERS_SYSTEMS ("vmckpt vmckpt-zstd3 casync restic borg"), PEERS_NET (0),
#   PEERS_NET_RATE (1gbit), PEERS_NET_PORT (2299)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/rel-norados} # a directory-store node needs no librados: fewer pages to load
ROUNDS=${PEERS_ROUNDS:-3}; SETS=${PEERS_SETS:-cpu:1000000 mem:24}; MEM=${PEERS_MEM:-128}
GAP=${PEERS_GAP_S:-3}; ACCEL=${PEERS_ACCEL:-tcg}
SYSTEMS=${PEERS_SYSTEMS:-vmckpt vmckpt-zstd3 casync restic borg}
NET=${PEERS_NET:-0}; RATE=${PEERS_NET_RATE:-1gbit}; PORT=${PEERS_NET_PORT:-2299}
[ "$(id -u)" = 0 ] || { echo "peers.sh: run as root (it drops the page cache)" >&2; exit 2; }
need=()
command -v casync >/dev/null || need+=(casync)
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
command -v socat >/dev/null || need+=(socat)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    echo "# installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
[ -x "$B/store_bench" ] || make -s RADOS=0 all
G=$(pwd)/build/guest
[ -f "$G/base.qcow2" ] || make -s guest
D=$(mktemp -d /var/tmp/vmckpt-peers.XXXXXX) # on disk, not tmpfs
chmod 755 "$D" # the SFTP server's user walks through it
CSV=${PEERS_CSV:-$D/samples.csv}
QEMU_PID=
NS= # the prefix that runs a command in the namespace when NET=1
NSNAME=vmckpt-peers-$$
cleanup() {
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null
    if [ "$NET" = 1 ]; then
        scripts/servers.sh stop sftp "$D/srv" 2>/dev/null || true
        ip netns del "$NSNAME" 2>/dev/null || true
    fi
    rm -rf "$D"
}
trap cleanup EXIT
if [ "$NET" = 1 ]; then
    ip netns add "$NSNAME"
    NS="ip netns exec $NSNAME"
    $NS ip link set lo up
    # burst: at least a timer tick's worth at the rate (1 Gbit/s / 250 Hz = 500 KB)
    $NS tc qdisc add dev lo root tbf rate "$RATE" burst 512k latency 50ms
    SFTP_URI=$($NS scripts/servers.sh start sftp "$D/srv" "$PORT")
    SUSER=$(scripts/servers.sh user sftp "$D/srv")
    printf 'Host store\n HostName 127.0.0.1\n Port %s\n User %s\n IdentityFile %s\n UserKnownHostsFile %s\n StrictHostKeyChecking yes\n BatchMode yes\n' \
        "$PORT" "$SUSER" "$D/srv/client_key" "$D/srv/known_hosts" > "$D/ssh_config"
    printf '#!/bin/sh\nexec ssh -F %s "$@"\n' "$D/ssh_config" > "$D/ssh"
    chmod 755 "$D/ssh"
    export BORG_RSH=$D/ssh CASYNC_SSH_PATH=$D/ssh
    $NS "$D/ssh" store true || { echo "peers.sh: ssh to the namespace's sshd failed" >&2; exit 1; }
fi
# net_bytes: bytes sent over the namespace's loopback so far
net_bytes() { if [ "$NET" = 1 ]; then $NS cat /sys/class/net/lo/statistics/tx_bytes; else echo 0; fi; }
# repo_dir SYS: where SYS's repository lives on disk (the server's side when NET=1)
repo_dir() { if [ "$NET" = 1 ]; then echo "$D/srv/root/repo-$1"; else echo "$D/repo-$1"; fi; }
export RESTIC_PASSWORD=bench BORG_PASSPHRASE= BORG_BASE_DIR=$D/borg-home
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

hmp() { echo "$1" | socat - "UNIX-CONNECT:$D/mon.sock" 2>/dev/null | tr -d '\r'; }

# images SET WORK: 5 memory images of the guest running WORK into $D/img/SET/
images() {
    local dir=$D/img/$1 ov=$D/img/$1/disk.qcow2
    mkdir -p "$dir"
    qemu-img create -q -f qcow2 -b "$G/base.qcow2" -F qcow2 "$ov"
    qemu-system-x86_64 -accel "$ACCEL" -machine pc -m "$MEM" -nodefaults -no-user-config \
        -display none -kernel "$G/vmlinuz" -initrd "$G/initrd.img" \
        -append "console=ttyS0 quiet vmckpt.work=$2" -drive "file=$ov,if=virtio,format=qcow2" \
        -serial "file:$dir/serial.log" -monitor "unix:$D/mon.sock,server=on,wait=off" &
    QEMU_PID=$!
    for _ in $(seq 600); do grep -aq "vmckpt-guest: up" "$dir/serial.log" 2>/dev/null && break; sleep 0.1; done
    grep -aq "vmckpt-guest: up" "$dir/serial.log" || { echo "peers.sh: the guest did not boot" >&2; exit 1; }
    sleep "$GAP"
    for i in 1 2 3 4 5; do
        hmp stop >/dev/null
        hmp "migrate \"exec:cat > $dir/$i\"" >/dev/null
        for _ in $(seq 600); do hmp "info migrate" | grep -q "Migration status: completed" && break; sleep 0.1; done
        hmp "info migrate" | grep -q "Migration status: completed" || { echo "peers.sh: migrate failed" >&2; exit 1; }
        hmp cont >/dev/null
        sleep "$GAP"
    done
    kill "$QEMU_PID"; wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=
    rm -f "$ov" "$D/mon.sock"
}

repo_bytes() { du -sb "$1" | cut -f1; }
# timed OUT CMD...: runs CMD under /usr/bin/time; OUT gets "wall user sys minflt inblocks"
timed() {
    local out=$1; shift
    $NS /usr/bin/time -o "$out" -f "%e %U %S %R %I" "$@" >"$D/cmd.out" 2>"$D/cmd.err" ||
        { echo "peers.sh: failed: $*" >&2; cat "$D/cmd.err" >&2; exit 1; }
}

# How each system names its repository at directory REPO: on local disk, or
# through the namespace's sshd when NET=1
vk_uri() { if [ "$NET" = 1 ]; then echo "${SFTP_URI/\?//${1##*/}?}"; else echo "file://$1"; fi; }
ca_loc() { if [ "$NET" = 1 ]; then echo "store:$1"; else echo "$1"; fi; }
re_loc() { if [ "$NET" = 1 ]; then echo "sftp:store:$1"; else echo "$1"; fi; }
bo_loc() { if [ "$NET" = 1 ]; then echo "ssh://store$1"; else echo "$1"; fi; }
RESTIC_SSH="sftp.command=$D/ssh store -s sftp"

# put SYS REPO IMG N: stores image N of a set into SYS's repository
put() {
    local sys=$1 repo=$2 img=$3 n=$4
    case $sys in
    vmckpt) timed "$D/t" "$B/store_bench" putset "$(vk_uri "$repo")" "$img"; cp "$D/cmd.out" "$D/$sys.set$n" ;;
    vmckpt-zstd3) timed "$D/t" env BENCH_CODEC=zstd3 "$B/store_bench" putset "$(vk_uri "$repo")" "$img"
        cp "$D/cmd.out" "$D/$sys.set$n" ;;
    casync) timed "$D/t" casync make --store="$(ca_loc "$repo/store")" "$(ca_loc "$repo/$n.caibx")" "$img" ;;
    restic) [ -d "$repo" ] || $NS restic -o "$RESTIC_SSH" -q -r "$(re_loc "$repo")" init >/dev/null
        timed "$D/t" restic -o "$RESTIC_SSH" -q -r "$(re_loc "$repo")" --no-cache backup --tag "i$n" "$img" ;;
    borg) [ -d "$repo" ] || $NS borg init -e none "$(bo_loc "$repo")" >/dev/null
        timed "$D/t" sh -c "cd '$(dirname "$img")' && borg create --compression lz4 '$(bo_loc "$repo")::i$n' '$(basename "$img")'" ;;
    esac
}

# get SYS REPO N OUTDIR: restores image N into OUTDIR; prints the restored file
get() {
    local sys=$1 repo=$2 n=$3 out=$4
    mkdir -p "$out"
    case $sys in
    vmckpt | vmckpt-zstd3) timed "$D/t" sh -c "'$B/store_bench' getset '$(vk_uri "$repo")' '$D/$sys.set$n' '$out' && sync"
        echo "$out/0" ;;
    casync) timed "$D/t" sh -c "casync extract --store='$(ca_loc "$repo/store")' '$(ca_loc "$repo/$n.caibx")' '$out/img' && sync"
        echo "$out/img" ;;
    restic) local snap; snap=$($NS restic -o "$RESTIC_SSH" -q -r "$(re_loc "$repo")" --no-cache snapshots --tag "i$n" --json | jq -r '.[0].id')
        timed "$D/t" sh -c "restic -o '$RESTIC_SSH' -q -r '$(re_loc "$repo")' --no-cache restore '$snap' --target '$out' && sync"
        find "$out" -type f | head -n1 ;;
    borg) timed "$D/t" sh -c "cd '$out' && borg extract '$(bo_loc "$repo")::i$n' && sync"
        find "$out" -type f | head -n1 ;;
    esac
}

echo "set,round,system,image,op,wall_s,cpu_s,bytes_added,minflt,read_bytes,image_bytes,own_read_bytes,own_minflt,needed_bytes,net_bytes" > "$CSV"
echo "# vmckpt vs peers: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uname -r); $ROUNDS rounds;" \
     "casync $(casync --version 2>&1 | awk '{print $2}'), $(restic version | awk '{print $1, $2}'), $(borg --version)"
for work in $SETS; do
    set_id=${work%%:*}
    images "$set_id" "$work"
    sizes=$(for i in 1 2 3 4 5; do stat -c %s "$D/img/$set_id/$i"; done | awk '{printf "%.0f ", $1 / 1048576}')
    echo "# set $set_id: guest $MEM MiB running $work, images of $sizes MiB"
    for r in $(seq "$ROUNDS"); do
        # the order of the systems turns each round
        order=$(echo $SYSTEMS | tr ' ' '\n' | awk -v r="$r" '{a[NR]=$0} END {for (i = 0; i < NR; i++) print a[(i + r - 1) % NR + 1]}')
        for s in $order; do rm -rf "$(repo_dir "$s")" "$D/$s".set*; done
        mkdir -p "$(repo_dir casync)"
        [ "$NET" = 1 ] && chown "$SUSER" "$(repo_dir casync)"
        for i in 1 2 3 4 5; do
            img=$D/img/$set_id/$i
            for s in $order; do
                repo=$(repo_dir "$s")
                before=0; [ -d "$repo" ] && before=$(repo_bytes "$repo")
                sync; nb=$(net_bytes); put "$s" "$repo" "$img" "$i"; sync
                read -r wall user sys minflt inb < "$D/t"
                echo "$set_id,$r,$s,$i,put,$wall,$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}'),$(( $(repo_bytes "$repo") - before )),$minflt,$((inb * 512)),$(stat -c %s "$img"),,,,$(( $(net_bytes) - nb ))" >> "$CSV"
            done
        done
        for s in $order; do
            sync; echo 3 > /proc/sys/vm/drop_caches
            nb=$(net_bytes)
            f=$(get "$s" "$(repo_dir "$s")" 5 "$D/out-$s")
            nb=$(( $(net_bytes) - nb ))
            read -r wall user sys minflt inb < "$D/t"
            want=$(sha256sum < "$D/img/$set_id/5"); have=$(sha256sum < "$f")
            [ "$want" = "$have" ] || { echo "peers.sh: $s restored image 5 wrong" >&2; exit 1; }
            own=",,"
            case $s in vmckpt*) own=$(jq -r '[.read_bytes, .minflt, .needed_bytes] | @csv' "$D/cmd.out") ;; esac
            echo "$set_id,$r,$s,5,get,$wall,$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}'),0,$minflt,$((inb * 512)),$(stat -c %s "$f"),$own,$nb" >> "$CSV"
            rm -rf "$D/out-$s"
        done
    done
    rm -rf "$D/img/$set_id"
done

# Tables: medians over rounds [min-max]
med() { sort -g | awk '{a[NR]=$1} END {if (!NR) {print "-"; exit}; printf "%s [%s-%s]", (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2), a[1], a[NR]}'; }
col() { # col SET SYSTEM OP FIELD IMAGES(regex) SCALE: per-round values (mean over the images)
    awk -F, -v st="$1" -v sy="$2" -v op="$3" -v f="$4" -v im="$5" -v sc="$6" \
        '$1 == st && $3 == sy && $5 == op && $4 ~ im && $f != "" {s[$2] += $f / sc; n[$2]++}
         END {for (r in s) printf "%.3f\n", s[r] / n[r]}' "$CSV"
}
for work in $SETS; do
    st=${work%%:*}
    echo
    echo "Set $st ($work, guest $MEM MiB): medians of $ROUNDS rounds [min-max]"
    echo
    echo "| | $(echo $SYSTEMS | sed 's/ / | /g') |"
    echo "|---|$(for _ in $SYSTEMS; do printf -- '---|'; done)"
    row() { printf '| %s |' "$1"; for s in $SYSTEMS; do printf ' %s |' "$(col "$st" "$s" "$2" "$3" "$4" "$5" | med)"; done; echo; }
    row "first image stored, MiB" put 8 '^1$' 1048576
    row "bytes added, images 2-5, mean MiB" put 8 '^[2-5]$' 1048576
    row "ingest CPU per image, s" put 7 . 1
    row "ingest wall per image, s" put 6 . 1
    row "restore of image 5, wall s (cold cache, synced)" get 6 . 1
    if [ "$NET" = 1 ]; then
        row "bytes over the link per image stored, MB" put 15 . 1000000
        row "bytes over the link to restore image 5, MB" get 15 . 1000000
    else
        row "bytes read from disk to restore, MB" get 10 . 1000000
    fi
    row "minor page faults during the restore, k" get 9 . 1000
    [ "$NET" = 1 ] || row "vmckpt within the restore (as in the agent): bytes read, MB" get 12 . 1000000
    row "vmckpt within the restore: stored bytes it needs, MB" get 14 . 1000000
    row "vmckpt within the restore: minor page faults, k" get 13 . 1000
done

# Targets (issue 16), per set, on medians
echo
medv() { col "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
check() { awk -v a="$2" -v b="$3" 'BEGIN {exit !(a <= b)}' && echo "target $1: met ($2 <= $3)" || echo "target $1: MISSED ($2 > $3)"; }
for work in $SETS; do
    st=${work%%:*}
    echo "# set $st"
    check "restore wall <= casync's" "$(medv "$st" vmckpt get 6 . 1)" "$(medv "$st" casync get 6 . 1)"
    check "bytes added per later image <= casync's" "$(medv "$st" vmckpt put 8 '^[2-5]$' 1)" "$(medv "$st" casync put 8 '^[2-5]$' 1)"
    check "bytes added per later image <= 0.6x restic's" "$(medv "$st" vmckpt put 8 '^[2-5]$' 1)" \
        "$(awk -v v="$(medv "$st" restic put 8 '^[2-5]$' 1)" 'BEGIN {printf "%.0f", v * 0.6}')"
    smallest=$(for s in casync restic borg; do medv "$st" "$s" put 8 '^1$' 1; done | sort -g | head -n1)
    check "first image <= 1.05x the smallest peer's" "$(medv "$st" vmckpt put 8 '^1$' 1)" \
        "$(awk -v v="$smallest" 'BEGIN {printf "%.0f", v * 1.05}')"
    check "ingest CPU <= 0.8x casync's" "$(medv "$st" vmckpt put 7 . 1)" \
        "$(awk -v v="$(medv "$st" casync put 7 . 1)" 'BEGIN {printf "%.3f", v * 0.8}')"
    need=$(medv "$st" vmckpt get 14 . 1)
    size=$(awk -F, -v st="$st" '$1 == st && $3 == "vmckpt" && $5 == "get" {print $11; exit}' "$CSV")
    # over the network the link's bytes (SSH's framing included) count, not the server's disk
    rd=12; [ "$NET" = 1 ] && rd=15
    check "restore bytes read <= 1.15x the stored bytes needed" \
        "$(medv "$st" vmckpt get $rd . 1)" "$(awk -v v="$need" 'BEGIN {printf "%.0f", v * 1.15}')"
    check "minor faults <= 2 k per 100 MiB restored" "$(medv "$st" vmckpt get 13 . 1)" \
        "$(awk -v v="$size" 'BEGIN {printf "%.0f", 2000 * v / (100 * 1048576)}')"
done
echo "# samples: $CSV"
[ -n "${PEERS_CSV:-}" ] || cp "$CSV" /tmp/vmckpt-peers-last.csv
