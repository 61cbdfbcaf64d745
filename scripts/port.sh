# Sourced by servers.sh and ceph.sh: pick_port [CMD...] prints a TCP port
# nothing listens on, below the ephemeral range (CMD: a prefix such as
# `ip netns exec NS`, to look inside a namespace).
pick_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 12000))
        "$@" ss -Htln "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
    done
    echo "$(basename "$0"): no free TCP port found in 20000-31999" >&2
    return 1
}
