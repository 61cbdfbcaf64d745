# Sourced by eval/exp/*.sh: where things are, agents, guests, CSV helpers.
# Settings (environment): QUICK (1: one run per point, fewer points),
# EVAL_RUNS (runs per point: 3, or 1 with QUICK), EVAL_OUT (where the CSVs
# go: eval/results), EVAL_ACCEL (tcg), B (the build: build/rel), EVAL_KERNEL
# (the guest's kernel: build/guest/vmlinuz, the bzImage a user boots; the
# suite's quick run boots vmlinux, 3.3 CPU seconds less a boot under TCG),
# EVAL_APPEND (the guest's kernel options: the agent's default, or the
# suite's, tests/integration/lib.sh TEST_APPEND).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${B:-$ROOT/build/rel}
case $B in /*) ;; *) B=$ROOT/$B ;; esac
G=$ROOT/build/guest
QUICK=${QUICK:-0}
RUNS=${EVAL_RUNS:-$([ "$QUICK" = 1 ] && echo 1 || echo 3)}
OUT=${EVAL_OUT:-$ROOT/eval/results}
ACCEL=${EVAL_ACCEL:-tcg}
KERNEL=${EVAL_KERNEL:-$G/vmlinuz}
mkdir -p "$OUT"
W=$(mktemp -d /var/tmp/vmckpt-eval.XXXXXX) # on disk, not tmpfs: stores write here
chmod 755 "$W"
# sleep without a process (as tests/integration/lib.sh: a fork and an exec
# cost 7 ms of CPU here, and the experiments poll ten times a second)
mkfifo "$W/.nap" && exec {NAP_FD}<>"$W/.nap"
sleep() {
    [[ $# = 1 && $1 =~ ^[0-9]*\.?[0-9]+$ && -n ${NAP_FD:-} ]] || { command sleep "$@"; return; }
    read -r -t "$1" -u "$NAP_FD" _ || true
}
EXITS=()
at_exit() { EXITS+=("$1"); }
eval_cleanup() {
    local i
    for ((i = ${#EXITS[@]} - 1; i >= 0; i--)); do eval "${EXITS[$i]}" >/dev/null 2>&1 || true; done
    pkill -9 -f "$W/" 2>/dev/null || true
    rm -rf "$W"
}
trap eval_cleanup EXIT
# set -e ends a script silently: say where
trap 'echo "eval: ${BASH_SOURCE[0]##*/} line $LINENO: a command failed (exit $?)" >&2' ERR
say() { echo "# $(date +%T) $*" >&2; }
die() { echo "eval: $*" >&2; exit 1; }

# The paper's method: stop-and-copy, whole memory and delta at every
# checkpoint, always compressed (the paper's gzip; zstd at its fastest here).
PAPER_SET=(--set data.mode=whole --set data.codec=zstd1)
PAPER_MODE=stop-copy
both_agents() { agent ours; agent paper "${PAPER_SET[@]}"; } # agents named ours and paper
mode_of() { [ "$1" = ours ] && echo auto || echo "$PAPER_MODE"; } # the checkpoint mode of a method

declare -A AGENT_PIDS
# agent NAME [vmckptd args]: an agent with state $W/NAME (in network namespace
# $AGENT_NS when set; an FTP/SFTP password in the URI goes by the environment)
agent() {
    local x=$1; shift
    local args=() a pw=
    for a in "$@"; do
        if [[ $a == ftp://*:*@* || $a == sftp://*:*@* ]]; then
            pw=${a#*://*:}; pw=${pw%%@*}; a=${a/:$pw@/@}
        fi
        args+=("$a")
    done
    mkdir -p "$W/$x"
    ${AGENT_NS:+ip netns exec "$AGENT_NS"} env ${pw:+VMCKPT_STORE_PASSWORD=$pw} \
        "$B/vmckptd" --state-dir "$W/$x" --set "qemu.accel=$ACCEL" \
        ${EVAL_APPEND:+--set "task.append=$EVAL_APPEND"} "${args[@]}" >>"$W/$x.log" 2>&1 &
    AGENT_PIDS[$x]=$!
    at_exit "agent_stop $x"
    for _ in $(seq 200); do vk "$x" status >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "agent $x does not start: $(tail -3 "$W/$x.log")"
}
agent_stop() { # (its VMs go with the work directory at exit)
    local p=${AGENT_PIDS[$1]:-}
    unset "AGENT_PIDS[$1]"
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
}
vk() { local x=$1; shift; "$B/vmckpt" --socket "$W/$x/vmckptd.sock" "$@"; }
serial() { vk "$1" --json status "$2" | jq -r .serial_log; }
# wait_serial AGENT TASK REGEX SECONDS
wait_serial() {
    local s; s=$(serial "$1" "$2")
    for _ in $(seq $(($4 * 10))); do grep -aqE "$3" "$s" 2>/dev/null && return 0; sleep 0.1; done
    die "task $2 on $1: no line matching '$3' after $4 s: $(tail -c 300 "$s")"
}
# boot AGENT TASK MEM WORK [run args]: runs the guest, waits until it is up
boot() {
    local x=$1 t=$2 m=$3 w=$4; shift 4
    vk "$x" run "$t" --base "$G/base.qcow2" --kernel "$KERNEL" --initrd "$G/initrd.img" \
        --work "$w" --memory "$m" "$@" >/dev/null || die "cannot run $t on $x"
    wait_serial "$x" "$t" "vmckpt-guest: up" 120
}
# ckpt AGENT TASK [args]: a checkpoint, waited for; prints its summary (JSON)
# with "wall_us" added: from the request to the commit
ckpt() {
    local x=$1 t=$2 t0 j; shift 2
    t0=$(date +%s%N)
    j=$(vk "$x" --json checkpoint "$t" "$@") || die "checkpoint of $t on $x failed"
    echo "$j" | jq -c --argjson w $(( ($(date +%s%N) - t0) / 1000 )) '. + {wall_us: $w}'
}
# The machine and the date, for captions.
machine() {
    echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//;s/  */ /g')), $(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1048576 )) GiB, $(uname -r), accel $ACCEL"
}
# csv_head FILE COLUMNS: starts FILE (header, and a comment line with the
# machine and date that readers skip)
csv_head() { printf '%s\n' "$2" >"$1"; }
# Shaped link: a network namespace whose loopback is limited to RATE (tbf;
# this kernel has no netem, so no added delay). Servers and clients inside.
shaped_ns() { # shaped_ns NAME RATE
    ip netns add "$1" || die "cannot make network namespace $1"
    at_exit "ip netns pids $1 | xargs -r kill -9; ip netns del $1"
    ip -n "$1" link set lo up
    # burst: at least a timer tick's worth at the rate (1 Gbit/s / 250 Hz = 500 KB)
    ip netns exec "$1" tc qdisc add dev lo root tbf rate "$2" burst 512k latency 50ms
}
