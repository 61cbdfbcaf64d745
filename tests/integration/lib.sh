# Shared helpers of the integration tests (sourced). Each test gets its own
# directory under /tmp, its own agent(s) and store, and cleans up after itself.
# Output is TAP: "ok N - what" / "not ok N - what".
set -u
BIN=${BIN:?set BIN to the build directory holding vmckptd and vmckpt}
BIN=$(cd "$BIN" && pwd)
GUEST=${GUEST:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/guest}
# The kernel the tests boot: the uncompressed one, with its PVH entry
# (guest/build.sh: 2.4 CPU seconds a boot under TCG against 5.7 for the
# bzImage, KERNEL=$GUEST/vmlinuz). Two restored guests have panicked in the
# suite's runs so far, both in t_modes: one booted from vmlinux ("Attempted
# to kill the idle task"), one from the bzImage ("Fatal exception in
# interrupt", 2026-12-07, after a save cancelled in pre-switchover); neither
# came back in 37 runs since (12 of t_modes, 25 of its part 3 alone). A
# failed resume check prints the head of the guest's oops (got_counter).
KERNEL=${KERNEL:-$GUEST/vmlinux}
# The kernel options of the tests' guests: the default's, and the skipping of
# what the test guest never uses (the crypto self-tests, the built-in
# certificates, kprobe tracing, the KDF self-test): about 10% of a boot's
# CPU under TCG (2.3 -> 2.1 s; acpi=off saved no more than the noise).
# VMCKPT_TEST_APPEND='console=ttyS0 quiet' boots them as a user's would.
TEST_APPEND=${VMCKPT_TEST_APPEND:-console=ttyS0 quiet cryptomgr.notests initcall_blacklist=load_system_certificate_list,init_kprobe_trace,crypto_kdf108_init}
T=$(mktemp -d /tmp/vkt.XXXXXX)
MEM=${VMCKPT_TEST_MEMORY:-128}
n=0; nfail=0
# sleep, without a process: sleep(1) is a fork and an exec, 7 ms of CPU on
# this machine (a PVM guest, where page tables cost), and the tests wait in
# loops that look ten times a second (sleep 0.1), thousands of times a run.
# read -t on a FIFO nobody writes waits as long for 0.1 ms of CPU.
# (A signal also ends it at once, where bash waits for a sleep to end first.)
mkfifo "$T/.nap" && exec {NAP_FD}<>"$T/.nap"
sleep() {
    [[ $# = 1 && $1 =~ ^[0-9]*\.?[0-9]+$ && -n ${NAP_FD:-} ]] || { command sleep "$@"; return; }
    read -r -t "$1" -u "$NAP_FD" _ || true
    return 0
}
LOGS_KEPT=${VMCKPT_TEST_LOGS:-/tmp/vmckpt-test-logs} # logs of agents that failed, kept
AGENT_PIDS=()

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); nfail=$((nfail + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do printf '%s\n' "$l" | sed 's/^/#   /'; done; }
# check "what" command...: ok if the command succeeds
check() { local what=$1; shift; if "$@" >"$T/last.out" 2>&1; then ok "$what"; else not_ok "$what" "$(tail -5 "$T/last.out")"; return 1; fi; }
# check_fails "what" "expected text" command...: ok if it fails and says the text
check_fails() {
    local what=$1 want=$2; shift 2
    if "$@" >"$T/last.out" 2>&1; then not_ok "$what" "succeeded but should have failed: $(tail -3 "$T/last.out")"
    elif grep -qi -- "$want" "$T/last.out"; then ok "$what"
    else not_ok "$what" "error does not say '$want':" "$(tail -3 "$T/last.out")"; fi
}

# start_agent NAME [extra vmckptd args]: agent with state $T/NAME, shared store $T/store
start_agent() {
    local name=$1; shift
    mkdir -p "$T/$name"
    # AGENT_NETNS: run it (and so its VMs) inside that network namespace
    ${AGENT_NETNS:+ip netns exec "$AGENT_NETNS"} env ${AGENT_ENV:-} "$BIN/vmckptd" \
        --state-dir "$T/$name/state" --store "file://$T/store" \
        --set qemu.accel=tcg --set "task.append=$TEST_APPEND" "$@" >>"$T/$name/agent.log" 2>&1 &
    local pid=$!
    AGENT_PIDS+=("$pid")
    eval "AGENT_$name=$pid"
    for _ in $(seq 300); do
        # (a socket file may be left by an agent killed with -9: ask, don't
        # look; but only once there is one: each ask is a sanitizer-built
        # process, and many tests at once pay for every one)
        [ -S "$T/$name/state/vmckptd.sock" ] &&
            vkp "$name" status >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { echo "# agent $name died:"; sed 's/^/#   /' "$T/$name/agent.log" | tail -5; return 1; }
        sleep 0.1
    done
    return 1
}
# vk NAME ARGS...: the client against agent NAME
vk() { local name=$1; shift; "$BIN/vmckpt" --socket "$T/$name/state/vmckptd.sock" "$@"; }
# vkp NAME ARGS...: the same for polling loops and lookups, with the release
# build's client when there is one (a sanitizer's start and leak check cost
# 40-60 ms a call, and the suite makes thousands; the calls a test checks
# keep the sanitizers)
REL_CLIENT=$(cd "$BIN/../rel" 2>/dev/null && [ -x vmckpt ] && echo "$PWD/vmckpt")
vkp() {
    local name=$1; shift
    if [ -n "$REL_CLIENT" ]; then "$REL_CLIENT" --socket "$T/$name/state/vmckptd.sock" "$@"
    else ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" vk "$name" "$@"; fi
}
# stop_agent NAME: SIGTERM, and the agent must exit 0 with no sanitizer report
# agent_report NAME: its sanitizer report (or its last lines) as TAP comments,
# and its log kept where it outlives the test
agent_report() {
    local log=$T/$1/agent.log keep
    keep=$LOGS_KEPT/$(basename "$0" .sh)-$1.log
    mkdir -p "$LOGS_KEPT" && cp "$log" "$keep"
    { sed -n '/ERROR: .*Sanitizer\|WARNING: ThreadSanitizer\|runtime error/,/^SUMMARY/p' "$log" | head -n 60
      tail -n 5 "$log"; echo "(log kept: $keep)"; } | sed 's/^/#   /'
}
stop_agent() {
    local name=$1 pid; eval "pid=\$AGENT_$name"
    kill -TERM "$pid" 2>/dev/null
    if wait "$pid"; then
        if grep -q "ERROR: .*Sanitizer\|WARNING: ThreadSanitizer\|runtime error" "$T/$name/agent.log"; then
            not_ok "agent $name is clean under the sanitizers"; agent_report "$name"
        else ok "agent $name stops cleanly"; fi
    else
        not_ok "agent $name stops cleanly"; agent_report "$name"
    fi
}
run_counter() { # run_counter AGENT TASK [more run args]
    local name=$1 task=$2; shift 2
    vk "$name" run "$task" --base "$GUEST/base.qcow2" --kernel "$KERNEL" \
        --initrd "$GUEST/initrd.img" --work counter --memory "$MEM" "$@"
}
# rm_task AGENT TASK: vmckpt rm, asked again while a (periodic) checkpoint is
# in progress, which rm refuses rather than waits for
rm_task() {
    local i
    for i in $(seq 600); do
        vk "$1" rm "$2" >"$T/rm.out" 2>&1 && { cat "$T/rm.out"; return 0; }
        grep -q 'in progress' "$T/rm.out" || { cat "$T/rm.out"; return 1; }
        sleep 0.1
    done
    cat "$T/rm.out"; return 1
}
serial_of() { vkp "$1" --json status "$2" | sed -n 's/.*"serial_log": "\(.*\)".*/\1/p'; }
pid_of() { vkp "$1" --json status "$2" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p'; }
# wait_line FILE REGEX [SECONDS]
# The guest's console ends lines with CR LF: a REGEX anchored at the end of a
# line matches before the CR. One grep a poll, five polls a second: the
# suite's parts run side by side, and their polling is what fills the CPUs.
console() { tr -d '\r' < "$(kept_log "$1")" 2>/dev/null; }
# kept_log FILE: FILE, or, once a restore has removed its run directory, the
# copy of it the agent kept (STATE/logs/TASK/run-N.log, the whole log while it
# is under [task] log_max_kib, as the tests' are)
kept_log() {
    local f=$1
    if [ ! -e "$f" ] && [[ $f =~ ^(.*)/tasks/([^/]+)/run-([0-9]+)/serial\.log$ ]]; then
        f="${BASH_REMATCH[1]}/logs/${BASH_REMATCH[2]}/run-${BASH_REMATCH[3]}.log"
    fi
    echo "$f"
}
wait_line() {
    local f=$1 re=$2 s=${3:-60}
    [[ $re == *'$' ]] && re="${re%\$}"$'\r''*$'
    for _ in $(seq $((s * 5))); do grep -aq -- "$re" "$f" 2>/dev/null && return 0; sleep 0.2; done
    return 1
}
last_counter() { console "$1" | grep -a '^counter [0-9]' | tail -n 1 | awk '{print $2}'; }
first_counter() { console "$1" | grep -a '^counter [0-9]' | head -n 1 | awk '{print $2}'; }
# got_counter SERIAL_LOG: "got N" for a failed resume check, and the head of
# the guest kernel's oops or panic when its console holds one (a restored
# guest that crashed: the CI's log shows no more than this)
got_counter() {
    echo "got $(first_counter "$1")"
    console "$1" | grep -a -m1 -A14 -E 'BUG:|Oops|general protection|invalid opcode|divide error|Kernel panic|double fault' \
        | grep -av '^ *$' | cut -c1-160
}
# counter value the guest had printed when checkpoint SEQ of TASK was taken
counter_at() { # counter_at AGENT TASK SEQ ORIGINAL_SERIAL_LOG
    local bytes
    bytes=$(vkp "$1" --json show "$2" "$3" | sed -n 's/.*"serial_bytes": \([0-9]*\).*/\1/p')
    head -c "$bytes" "$(kept_log "$4")" | tr -d '\r' | grep -a '^counter [0-9]' | tail -n 1 | awk '{print $2}'
}

# flip_byte FILE OFFSET: inverts one byte, so the file surely changes (writing a
# fixed byte may write what was there already).
flip_byte() {
    perl -e 'open(my $f, "+<", $ARGV[0]) or die; seek($f, $ARGV[1], 0); read($f, my $c, 1);
             seek($f, $ARGV[1], 0); print $f chr(ord($c) ^ 0xff); close($f) or die' "$1" "$2"
}

# chunk_loc STORE SHA: "PACK_FILE OFFSET BYTES CODEC" of the record holding chunk SHA.
chunk_loc() {
    local f id
    f=$(grep -l "\"$2\"" "$1"/packidx/* | head -n1)
    [ -n "$f" ] || return 1
    id=$(basename "$f")
    jq -r --arg s "$2" --arg p "$1/packs/${id:0:2}/$id" \
        '.records[] | select(.[0] == $s) | "\($p) \(.[1]) \(.[2]) \(.[3])"' "$f" | head -n1
}

# stored_chunks STORE: the hash of every chunk whose pack and pack index are both there.
stored_chunks() {
    local f id
    for f in "$1"/packidx/*; do
        [ -e "$f" ] || continue
        id=$(basename "$f")
        [ -f "$1/packs/${id:0:2}/$id" ] && jq -r '.records[][0]' "$f"
    done | sort -u
}

# at_exit 'COMMANDS': run at exit before the common clean-up (a test's own
# servers, namespaces); a test never sets its own EXIT trap, which would
# replace this one and leave its directory behind.
EXIT_HOOKS=()
at_exit() { EXIT_HOOKS+=("$1"); }
cleanup() {
    local h
    for h in "${EXIT_HOOKS[@]}"; do eval "$h"; done
    for p in "${AGENT_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    pkill -9 -f "$T/" 2>/dev/null
    sleep 0.2
    for m in $(awk -v t="$T" '$2 ~ "^"t {print $2}' /proc/mounts); do umount -l "$m"; done
    if [ -n "${VMCKPT_TEST_KEEP:-}" ]; then echo "# kept: $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
finish() { echo "1..$n"; [ "$nfail" -eq 0 ]; }

# Upload gate (test builds; lib/testhook.h): with AGENT_ENV="$GATE_ENV", an
# upload stops between its objects while the gate is closed. gate_close;
# start a checkpoint; gate_held TASK SEQ: it is now certainly in flight;
# gate_open lets it go on.
GATE=$T/upload-gate
GATE_ENV="VMCKPT_TEST_UPLOAD_GATE=$GATE"
gate_close() { touch "$GATE"; }
gate_open() { rm -f "$GATE"; }
gate_held() { # gate_held TASK SEQ [SECONDS]  (SEQ may be '*': any checkpoint)
    local s=${3:-120}
    for _ in $(seq $((s * 10))); do compgen -G "$GATE.$1.$2" >/dev/null && return 0; sleep 0.1; done
    return 1
}
# Link gate (directory store): between a fenced write's check and its link(2).
LGATE=$T/link-gate
LGATE_ENV="VMCKPT_TEST_LINK_GATE=$LGATE"
# Commit gate: the same between the lease check of a commit and its write
# (AGENT_ENV="$CGATE_ENV").
CGATE=$T/commit-gate
CGATE_ENV="VMCKPT_TEST_COMMIT_GATE=$CGATE"
cgate_close() { touch "$CGATE"; }
cgate_open() { rm -f "$CGATE"; }
cgate_held() { # cgate_held TASK SEQ
    for _ in $(seq 1200); do compgen -G "$CGATE.$1.$2" >/dev/null && return 0; sleep 0.1; done
    return 1
}
