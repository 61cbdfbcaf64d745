#!/bin/bash
# The test suite: unit tests (cmocka), the ThreadSanitizer part, the layering,
# build-option and settings checks, the fuzzers for a bounded time, and the
# integration tests (real QEMU guests under TCG, real agents and stores).
# Independent parts run side by side, up to N at once; each part's output goes
# to a log of its own and the TAP is printed in one fixed order at the end,
# whatever order the parts finished in.
#
# Usage: tests/run.sh [-j N] [--fast] [--only REGEX] [--list] [BUILD_DIR]
#   BUILD_DIR  the ASan+UBSan build (default build/san); the TSan part runs
#              when build/tsan/vmckptd exists
#   -j N       CPUs the parts at once may keep busy (default:
#              VMCKPT_TEST_JOBS, else the CPUs), each part counted at what
#              it kept busy in its last run here (a part alone always runs;
#              at most 2N parts at once)
#   --fast     the edit-build-test tier (`make check-fast`): unit tests,
#              layering, settings and one integration smoke test
#              (t_counter: run, checkpoint, crash, restore)
#   --only RE  only the parts whose names match RE (e.g. 'int:t_(counter|data)')
#   --list     the parts' names, in order, and exit
# Logs: each part's whole log in VMCKPT_TEST_LOGDIR (default
# build/test-logs/run-<time>), kept after the run; the runner also records
# each part's time there (and in build/test-logs/times, which orders the
# next run longest first). Settings: VMCKPT_FUZZ_SECONDS (4).
set -u
cd "$(dirname "$0")/.."
usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
JOBS=${VMCKPT_TEST_JOBS:-$(nproc)}
tier=full only= list=0
while [ $# -gt 0 ]; do
    case $1 in
    -j) JOBS=${2:?-j needs a number}; shift 2 ;;
    -j*) JOBS=${1#-j}; shift ;;
    --fast) tier=fast; shift ;;
    --only) only=${2:?--only needs a pattern}; shift 2 ;;
    --list) list=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
    esac
done
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: -j wants a count of at least 1, not '$JOBS'" >&2; exit 2; }
B=${1:-build/san}
[ -x "$B/vmckptd" ] || { echo "run.sh: no build in $B (make SAN=1 all tests)" >&2; exit 2; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
FUZZ_SECONDS=${VMCKPT_FUZZ_SECONDS:-4}
TS=build/tsan

# --- the parts ----------------------------------------------------------------
# Each part: a name and the command that prints its TAP. Their order here is
# the order of the output; the order they start in is longest first.
NAMES=() CMDS=()
part() { NAMES+=("$1"); CMDS+=("$2"); }
for t in "$B"/tests/test_*; do
    part "unit:$(basename "$t")" "CMOCKA_MESSAGE_OUTPUT=TAP '$t'"
done
if [ $tier = full ] && [ -x $TS/vmckptd ]; then
    part "tsan:unit" "bash tests/tsan.sh $TS unit"
    for t in t_overlap t_failover t_longrun t_warm_shutdown; do
        part "tsan:$t" "bash tests/tsan.sh $TS $t"
    done
fi
part layering "bash tests/layering.sh && bash tests/layering.sh --self-test"
[ $tier = full ] && part build_options "bash tests/build_options.sh '$B'"
part settings "bash tests/settings_doc.sh '$B'"
if [ $tier = full ]; then
    for f in tests/fuzz/fuzz_*.c; do
        f=$(basename "$f" .c)
        part "fuzz:$f" "bash tests/fuzz/run.sh $FUZZ_SECONDS $f"
    done
    for t in tests/integration/t_*.sh; do part "int:$(basename "$t" .sh)" "BIN='$B' bash '$t'"; done
else
    part int:t_counter "BIN='$B' bash tests/integration/t_counter.sh"
fi
if [ -n "$only" ]; then
    keep_n=() keep_c=()
    for i in "${!NAMES[@]}"; do
        [[ ${NAMES[$i]} =~ $only ]] && { keep_n+=("${NAMES[$i]}"); keep_c+=("${CMDS[$i]}"); }
    done
    NAMES=("${keep_n[@]}") CMDS=("${keep_c[@]}")
fi
[ $list = 1 ] && { printf '%s\n' "${NAMES[@]}"; exit 0; }
[ ${#NAMES[@]} -gt 0 ] || { echo "run.sh: no part matches '$only' (see --list)" >&2; exit 2; }

# --- what every part needs, made once ----------------------------------------
LOGDIR=${VMCKPT_TEST_LOGDIR:-build/test-logs/run-$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$LOGDIR" || { echo "run.sh: cannot make the log directory $LOGDIR" >&2; exit 2; }
LOGDIR=$(cd "$LOGDIR" && pwd)
TIMES=build/test-logs/times
if printf '%s\n' "${NAMES[@]}" | grep -q '^int:\|^tsan:t_'; then
    bash guest/build.sh >"$LOGDIR/guest-build.log" 2>&1 \
        || { echo "run.sh: cannot build the test guest:"; tail -n 20 "$LOGDIR/guest-build.log"; exit 1; }
fi
if printf '%s\n' "${NAMES[@]}" | grep -q '^fuzz:' && ! make -s fuzz-build >"$LOGDIR/fuzz-build.log" 2>&1; then
    for i in "${!NAMES[@]}"; do # every harness fails, saying why
        [[ ${NAMES[$i]} == fuzz:* ]] && CMDS[$i]="echo 'not ok 1 - the fuzz harnesses build (log: $LOGDIR/fuzz-build.log)'; exit 1"
    done
fi

# --- running them -------------------------------------------------------------
# Each part in a process group of its own (set -m), so that a runner that is
# interrupted ends every part and what it started: SIGTERM to the part's group
# first (the exit hooks of its shells stop its agents, VMs and servers), then
# SIGKILL to the group.
declare -A PID=() START=() SECS=() RC=() CPU=()
# A part's "SECONDS CPU_SECONDS" in the last run here (build/test-logs/times),
# else as measured on a machine like CI's (tests/part-times, in the tree: CI
# runs from a clean clone), else nothing.
last_run() {
    local f
    for f in "$TIMES" tests/part-times; do
        [ -f "$f" ] || continue
        awk -v n="$1" '$1 == n { l = $2 " " $3 } END { if (l != "") print l }' "$f" | grep . && return 0
    done
    return 0
}
estimate() { # a part's seconds, for the order they start in (longest first)
    local s
    read -r s _ <<<"$(last_run "$1")"
    [ -n "$s" ] && { echo "$s"; return; }
    case $1 in
    int:t_eval | tsan:t_longrun | int:t_campaign) echo 400 ;;
    int:*) echo 90 ;;
    fuzz:*) echo "$FUZZ_SECONDS" ;;
    *) echo 10 ;;
    esac
}
# What a part costs is the CPU it keeps busy, in hundredths of a CPU: its
# CPU seconds over its seconds in its last run (last_run),
# at least 0.3 and at most 2; the parts at once cost at most -j CPUs (a
# part alone always runs), and at most twice -j parts run at once. Most
# integration tests mostly wait (leases, guests, servers: t_ceph keeps 0.3
# of a CPU busy), so two at a time left the CPUs half idle; the heavy ones
# keep more than one busy (agents under ThreadSanitizer, the quick
# evaluation's experiments side by side, the campaign's three nodes and
# real-time checker), and three of those at once made every part four times
# slower (the campaign beside t_failover took 45 s to recover from each
# fault instead of 8). Without a last run: 2 for those, 1 for the others.
cost() {
    local c
    # (a part of a second or two costs the least: its ratio is noise)
    c=$(last_run "$1" | awk '$2 ~ /^[0-9.]+$/ { printf "%d\n", ($1 > 2 ? $2 * 100 / $1 : 30) }')
    if [ -n "$c" ]; then
        [ "$c" -ge 30 ] || c=30; [ "$c" -le 200 ] || c=200; echo "$c"; return
    fi
    case $1 in tsan:t_* | int:t_eval | int:t_campaign) echo 200 ;; *) echo 100 ;; esac
}
CAP=$((JOBS * 100)) MAXPARTS=$((JOBS * 2))
declare -A COST=()
for i in "${!NAMES[@]}"; do COST[$i]=$(cost "${NAMES[$i]}"); done
# The parts that keep a CPU or more busy first, then the others, each group
# longest first: lighter parts fill the CPUs beside a heavy one. Longest
# first alone left the heavy parts to the end (each waits until it fits, and
# lighter ones kept fitting before it), where they ran nearly alone.
order=$(for i in "${!NAMES[@]}"; do echo "$(( COST[$i] >= 100 ? 1 : 0 )) $(estimate "${NAMES[$i]}") $i"; done \
    | sort -k1,1nr -k2,2nr -k3,3n | awk '{print $3}')
logof() { echo "$LOGDIR/$(echo "$1" | tr ':/' '__').log"; }

sid_of() { local s; s=$(cat "$LOGDIR/.sid-$1" 2>/dev/null) && [[ $s =~ ^[0-9]+$ ]] && echo "-$s"; }
stop_all() {
    local i p
    trap - INT TERM HUP
    echo "# interrupted: ending ${#PID[@]} running part(s)"
    # (to the whole group: a part's test may run under a wrapper, tsan.sh,
    # and its own exit hooks must run, or its VMs outlive it)
    for i in "${!PID[@]}"; do kill -TERM -- "-${PID[$i]}" $(sid_of "$i") 2>/dev/null; done
    for _ in $(seq 100); do
        p=0; for i in "${!PID[@]}"; do kill -0 "${PID[$i]}" 2>/dev/null && p=1; done
        [ $p = 0 ] && break; sleep 0.2
    done
    for i in "${!PID[@]}"; do kill -KILL -- "-${PID[$i]}" $(sid_of "$i") 2>/dev/null; done
    sleep 0.5; for i in "${!PID[@]}"; do rmdir "$(cg_of "$i")" 2>/dev/null; done
    echo "# logs: $LOGDIR"
    exit 130
}
trap stop_all INT TERM HUP

# A part's CPU seconds: those of every process it started, servers that
# left their parent included, from a cpuacct cgroup of its own (made here,
# removed when it ends); where there is none, from bash's `times` (what its
# processes waited for used).
CG=/sys/fs/cgroup/cpuacct
cg_of() { [ -w "$CG/cgroup.procs" ] && echo "$CG/vmckpt-test-$$-$1"; }

set -m
launch() {
    local i=$1
    START[$i]=$(date +%s); used=$((used + COST[$i]))
    # (the subshell outlives its part's cleanup: a signal to the group waits
    # for the part to end, and the runner watches the subshell)
    ( trap : INT TERM HUP; set +m
      cg=$(cg_of "$i"); mkdir "$cg" 2>/dev/null && echo "$BASHPID" >"$cg/cgroup.procs" 2>/dev/null || cg=
      # The part in a session of its own: with the scheduler's autogroups
      # (Debian's default), CPU time is shared between sessions, so a CPU hog
      # started from another shell gets one part's share, not half the
      # machine against the whole suite. The signals above go to it too.
      setsid bash -c "${CMDS[$i]}" & sp=$!
      echo "$sp" >"$LOGDIR/.sid-$i"
      rc=0
      while :; do # (a trapped signal ends a wait early)
          wait "$sp"; r=$?
          [ "$r" = 127 ] && break # (already waited for: rc is its status)
          rc=$r
          kill -0 "$sp" 2>/dev/null || break
      done
      if [ -n "$cg" ]; then awk '{ printf "%.1f\n", $1 / 1e9 }' "$cg/cpuacct.usage" >"$LOGDIR/.cpu-$i"
      else
          times >"$LOGDIR/.cpu-$i.t" # (no pipe: a pipe's `times` would be a child's, with no children)
          awk 'NR == 2 { for (k = 1; k <= 2; k++) { split($k, v, /[ms]/); c += v[1] * 60 + v[2] }
                         printf "%.1f\n", c }' "$LOGDIR/.cpu-$i.t" >"$LOGDIR/.cpu-$i"
      fi
      exit $rc ) </dev/null >"$(logof "${NAMES[$i]}")" 2>&1 &
    PID[$i]=$!
}
reap() { # waits for one part to end: its time and exit code
    local i rc dp=
    wait -n -p dp; rc=$?
    [ -n "$dp" ] || return 0 # (a signal woke the wait)
    for i in "${!PID[@]}"; do
        [ "${PID[$i]}" = "$dp" ] || continue
        RC[$i]=$rc; SECS[$i]=$(( $(date +%s) - START[$i] ))
        unset "PID[$i]"; used=$((used - COST[$i]))
        done_n=$((done_n + 1))
        CPU[$i]=$(cat "$LOGDIR/.cpu-$i" 2>/dev/null); rm -f "$LOGDIR/.cpu-$i" "$LOGDIR/.cpu-$i.t" "$LOGDIR/.sid-$i"
        rmdir "$(cg_of "$i")" 2>/dev/null
        echo "# [$done_n/${#NAMES[@]}] ${NAMES[$i]}: ${SECS[$i]} s (CPU ${CPU[$i]:-?} s)$( [ "$rc" = 0 ] || echo ", exit $rc")"
    done
}
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; } # busy and all jiffies
t0=$(date +%s) done_n=0 used=0 cpu0=$(busy)
echo "# running ${#NAMES[@]} parts, at most $JOBS CPUs' worth at once; logs in $LOGDIR"
# Longest first, each as soon as its cost fits (a heavy part alone always fits);
# a heavy part that does not fit yet lets lighter ones behind it go first.
pending=($order)
while [ ${#pending[@]} -gt 0 ]; do
    started=0
    for k in "${!pending[@]}"; do
        i=${pending[$k]}; c=${COST[$i]}
        if { [ $((used + c)) -le "$CAP" ] && [ ${#PID[@]} -lt "$MAXPARTS" ]; } || [ "$used" = 0 ]; then
            launch "$i"; unset "pending[$k]"; started=1
        fi
    done
    pending=("${pending[@]}")
    [ $started = 1 ] && [ ${#pending[@]} -gt 0 ] && [ "$used" -lt "$CAP" ] && continue
    [ ${#pending[@]} -gt 0 ] && reap
done
while [ ${#PID[@]} -gt 0 ]; do reap; done
# (a cgroup whose last task had not quite left when its part was reaped)
for i in "${!NAMES[@]}"; do rmdir "$(cg_of "$i")" 2>/dev/null; done
set +m
trap - INT TERM HUP

# --- the results, in the parts' own order --------------------------------------
pass=0 fail=0 failed=()
for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]} log=$(logof "${NAMES[$i]}")
    echo "# $name"
    cat "$log"
    p=$(grep -c '^ok ' "$log"); f=$(grep '^not ok ' "$log" | grep -vc '# SKIP')
    pass=$((pass + p)); fail=$((fail + f))
    if [ "$f" -gt 0 ] || [ "${RC[$i]}" -ne 0 ]; then
        failed+=("$i")
        [ "$f" -eq 0 ] && fail=$((fail + 1)) # a crash or a leak report with no failed case
    fi
    echo "# $name: ${SECS[$i]} s"
done
mkdir -p "$(dirname "$TIMES")"
{ for i in "${!NAMES[@]}"; do echo "${NAMES[$i]} ${SECS[$i]} ${CPU[$i]:-}"; done
  [ -f "$TIMES" ] && awk 'NR == FNR {seen[$1] = 1; next} !($1 in seen)' <(printf '%s\n' "${NAMES[@]}") "$TIMES"
  true # (a first run has no times yet)
} > "$TIMES.new" && mv "$TIMES.new" "$TIMES"
for i in "${!NAMES[@]}"; do echo "${SECS[$i]} ${NAMES[$i]} ${CPU[$i]:-?}"; done | sort -nr > "$LOGDIR/times"
echo "# the ten slowest parts (and the CPU seconds each used):"
head -n 10 "$LOGDIR/times" | awk '{printf "#   %5d s  %-22s (CPU %s s)\n", $1, $2, $3}'
for i in "${failed[@]}"; do
    log=$(logof "${NAMES[$i]}")
    echo "# FAILED ${NAMES[$i]} (exit ${RC[$i]}, ${SECS[$i]} s); the end of its log ($log):"
    tail -n 25 "$log" | sed 's/^/#   /'
done
[ ${#failed[@]} -gt 0 ] && echo "# failed: $(for i in "${failed[@]}"; do printf '%s ' "${NAMES[$i]}"; done)"
read -r b0 a0 <<<"$cpu0"; read -r b1 a1 <<<"$(busy)"
echo "# ${#NAMES[@]} parts in $(( $(date +%s) - t0 )) s, at most $JOBS CPUs' worth at once; the CPUs were busy $(( (b1 - b0) * 100 / (a1 - a0 > 0 ? a1 - a0 : 1) ))% of it; logs: $LOGDIR"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
