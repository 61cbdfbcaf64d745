#!/bin/bash
# A test run that is interrupted leaves nothing behind: tests/run.sh, given
# SIGTERM (as a CI timeout or a killed runner gives it) while t_stores has
# its FTP and SFTP servers up, ends that part, whose exit hooks stop both
# servers and remove their accounts; the runner says so, keeps its logs and
# exits 130. The state is made certain by waiting for the servers' lines in
# the part's log, not by a delay.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VMCKPT_TEST_LOGDIR=$T/logs bash "$ROOT/tests/run.sh" -j 1 --only '^int:t_stores$' "$BIN" >"$T/run.out" 2>&1 &
R=$!
at_exit "kill -TERM $R 2>/dev/null"
L=$T/logs/int_t_stores.log
for _ in $(seq 600); do grep -q '^ok 2 - sftp server starts' "$L" 2>/dev/null && break; sleep 0.1; done
fp=$(sed -n 's/^ok 1 - ftp server starts on 127.0.0.1:\([0-9]*\)$/\1/p' "$L" 2>/dev/null)
sp=$(sed -n 's/^ok 2 - sftp server starts on 127.0.0.1:\([0-9]*\)$/\1/p' "$L" 2>/dev/null)
listener() { ss -Htlnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2; }
FP=$(listener "$fp"); SP=$(listener "$sp")
[ -n "$FP" ] && [ -n "$SP" ] && ok "the runner's t_stores has vsftpd ($FP, port $fp) and sshd ($SP, port $sp) up" \
    || { not_ok "t_stores' servers up" "$(cat "$L" 2>/dev/null | head -5)"; finish; exit 1; }
# the part in a session of its own (the runner's note of it), which the
# signal below must reach all the same
sid=$(cat "$T"/logs/.sid-* 2>/dev/null | head -n1)
[ -n "$sid" ] && [ "$(ps -o sid= -p "$sid" | tr -d ' ')" = "$sid" ] \
    && [ "$(ps -o sid= -p "$R" | tr -d ' ')" != "$sid" ] && [ "$(ps -o sid= -p "$FP" | tr -d ' ')" != "$(ps -o sid= -p "$R" | tr -d ' ')" ] \
    && ok "the part runs in a session of its own ($sid), apart from the runner's" \
    || not_ok "the part's own session" "sid '$sid'; $(ps -o pid,sid,args -p "$R" -p "${sid:-1}" | cut -c1-120)"
# their directories from their command lines, and so their accounts
# (sshd rewrites its command line: "sshd: /usr/sbin/sshd -D -e -f DIR/sshd_config [listener] ...")
fdir=$(tr '\0' ' ' <"/proc/$FP/cmdline" | grep -o '/[^ ]*/vsftpd.conf' | head -n1); fdir=${fdir%/vsftpd.conf}
sdir=$(tr '\0' ' ' <"/proc/$SP/cmdline" | grep -o '/[^ ]*/sshd_config' | head -n1); sdir=${sdir%/sshd_config}
fu=; su=
[ -n "$fdir" ] && fu=$("$ROOT/scripts/servers.sh" user ftp "$fdir")
[ -n "$sdir" ] && su=$("$ROOT/scripts/servers.sh" user sftp "$sdir")
acct="$fu $su"
[ -n "$fu" ] && [ -n "$su" ] && id "$fu" >/dev/null 2>&1 && id "$su" >/dev/null 2>&1 \
    && ok "each runs as its account ($acct)" || not_ok "the servers' accounts exist" "'$fdir' '$sdir' '$acct'"
kill -TERM "$R"
rc=0; wait "$R" || rc=$?
[ "$rc" = 130 ] && grep -q "^# interrupted: ending 1 running part" "$T/run.out" \
    && ok "the runner, given SIGTERM, ends its part and exits 130" || not_ok "runner exit 130" "exit $rc: $(tail -3 "$T/run.out")"
grep -q "^# logs: $T/logs" "$T/run.out" && [ -s "$L" ] && ok "and keeps the part's log" || not_ok "logs kept" "$(tail -2 "$T/run.out")"
for _ in $(seq 100); do [ -e "/proc/$FP" ] || [ -e "/proc/$SP" ] || break; sleep 0.1; done
[ ! -e "/proc/$FP" ] && [ ! -e "/proc/$SP" ] && [ -z "$(listener "$fp")" ] && [ -z "$(listener "$sp")" ] \
    && ok "neither server is left running" || not_ok "servers ended" "$(ps -o pid,args -p "$FP" -p "$SP" | cut -c1-150)"
gone=1; for u in $acct; do id "$u" >/dev/null 2>&1 && gone=0; done
[ "$gone" = 1 ] && ok "and their accounts are removed" || not_ok "accounts removed" "$acct"
finish
