#!/bin/bash
# Table III and Figure 7: a task of fixed CPU work (cpu:STEPS, 256 MiB guest)
# run to its end with no checkpoints, and with checkpoints in four set-ups:
# whole (the paper's method: stop-and-copy, the whole memory and every delta
# again at each checkpoint, compressed) or delta (ours: auto mode, changed
# chunks only, adaptive codec), into FTP (vsftpd) or Ceph RADOS with 3
# replicas (3 OSDs), both on this host. Checkpoints as the paper's, scaled to
# the task's length: the first after 300/3200 of it, then every 600/3200
# (five in the paper's 3200 s task). Reported per run: the task's run time
# (host clock, from its first step to its last), the VM stopped time summed
# over its checkpoints, and each checkpoint's time (Figure 7). Set-ups take
# turns in each of RUNS rounds.
source "$(dirname "$0")/../lib.sh"
STEPS=${EVAL_T3_STEPS:-$([ "$QUICK" = 1 ] && echo 12 || echo 800)}
MEM=${EVAL_T3_MEM:-$([ "$QUICK" = 1 ] && echo 128 || echo 256)}
SETUPS="none whole-ftp whole-ceph delta-ftp delta-ceph"
FTP=$("$ROOT/scripts/servers.sh" start ftp "$W/ftp") || die "cannot start vsftpd"
at_exit "$ROOT/scripts/servers.sh stop ftp $W/ftp"
at_exit "$ROOT/scripts/ceph.sh stop $W/ceph"
ceph_start() { VMCKPT_CEPH_OSD_GIB=${EVAL_CEPH_OSD_GIB:-16} "$ROOT/scripts/ceph.sh" start "$W/ceph" >/dev/null; }
# The quick form starts Ceph while the first set-ups run (their times are
# not measurements there); the full form starts it before, on an idle host.
CEPH_PID=
# (at exit, a start still under way ends before the cluster is stopped)
at_exit '[ -z "$CEPH_PID" ] || { kill "$CEPH_PID"; wait "$CEPH_PID"; }'
if [ "$QUICK" = 1 ]; then ceph_start & CEPH_PID=$!; else ceph_start || die "cannot start Ceph"; fi
ceph_ready() { [ -z "$CEPH_PID" ] || { wait "$CEPH_PID" || die "cannot start Ceph"; CEPH_PID=; }; }
F=$OUT/table3.csv; F7=$OUT/fig7.csv
echo "setup,run,run_s,stopped_s,checkpoints,first_s,every_s" >"$F"
echo "setup,run,ckpt,wall_s,stopped_s,stored_mib" >"$F7"
# times S: host seconds (0.1 s steps) when the guest's lines matching S appear
task_run() { # task_run AGENT TASK: waits for the task's end; prints its run time (s)
    local s t0= t1=
    s=$(serial "$1" "$2")
    for _ in $(seq 36000); do
        [ -z "$t0" ] && grep -aq "^cpu: step 1/" "$s" && t0=$(date +%s.%N)
        grep -aq "^cpu: done" "$s" && { t1=$(date +%s.%N); break; }
        sleep 0.1
    done
    [ -n "$t1" ] || die "task $2 did not end"
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}'
}
first=0; every=0; k=0
# The quick form checkpoints after 1 s, then every 2: scaled from its short
# first run, beside the other experiments, the later set-ups could end
# before their first checkpoint (and Figure 7 had a series with no point).
[ "$QUICK" = 1 ] && first=1 every=2
for r in $(seq "$RUNS"); do
    for setup in $SETUPS; do
        k=$((k + 1)); a=t3-$k; t=t$k
        case $setup in
        none) agent "$a" ;;
        whole-ftp) agent "$a" --store "$FTP/s$k" "${PAPER_SET[@]}" ;;
        whole-ceph) ceph_ready; agent "$a" --store "$("$ROOT/scripts/ceph.sh" uri "$W/ceph" "p$k" 3)&timeout=120" "${PAPER_SET[@]}" ;;
        delta-ftp) agent "$a" --store "$FTP/s$k" ;;
        delta-ceph) ceph_ready; agent "$a" --store "$("$ROOT/scripts/ceph.sh" uri "$W/ceph" "p$k" 3)&timeout=120" ;;
        esac
        m=auto; [ "${setup%%-*}" = whole ] && m=$PAPER_MODE
        if [ "$setup" = none ]; then
            boot "$a" "$t" "$MEM" "cpu:$STEPS"
        else
            boot "$a" "$t" "$MEM" "cpu:$STEPS" --mode "$m" --first "$first" --every "$every"
        fi
        run_s=$(task_run "$a" "$t")
        if [ "$setup" = none ] && [ "$first" = 0 ]; then # the schedule, from the first run's length
            first=$(awk -v t="$run_s" 'BEGIN {v = int(t * 300 / 3200 + 0.5); print v < 1 ? 1 : v}')
            every=$(awk -v t="$run_s" 'BEGIN {v = int(t * 600 / 3200 + 0.5); print v < 1 ? 1 : v}')
        fi
        # (the quick form's short run can end before its first checkpoint
        # has committed: it waits for one, so that Figure 7 has a point)
        if [ "$QUICK" = 1 ] && [ "$setup" != none ]; then
            for _ in $(seq 240); do
                [ "$(vk "$a" --json ls "$t" 2>/dev/null | jq '.checkpoints | length')" -gt 0 ] 2>/dev/null && break
                sleep 0.5
            done
        fi
        vk "$a" --json ls "$t" >"$W/ls.json" || die "$setup: cannot list the checkpoints of $t: $(tail -5 "$W/$a.log")"
        jq -r --arg s "$setup" --arg r "$r" '.checkpoints | to_entries[] | [$s, $r, .key + 1,
            ((.value.seal_us // 0) + (.value.store_us // 0) + (.value.mem_save_us // 0)) / 1e6,
            .value.stopped_us / 1e6, ((.value.uploaded_bytes // 0) / 1048576 * 100 | round / 100)] | @csv' "$W/ls.json" | tr -d '"' >>"$F7"
        stopped=$(jq '[.checkpoints[].stopped_us] | add // 0 | . / 1e6' "$W/ls.json")
        n=$(jq '.checkpoints | length' "$W/ls.json")
        echo "$setup,$r,$run_s,$stopped,$n,$first,$every" >>"$F"
        vk "$a" rm "$t" >/dev/null 2>&1 || true
        agent_stop "$a"
        say "table3: $setup, run $r: $run_s s, $n checkpoints, stopped $stopped s"
    done
done
say "table3: $F, $F7"
