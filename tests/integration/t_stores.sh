#!/bin/bash
# The FTP and SFTP backends against real servers (vsftpd, OpenSSH's sshd) on
# 127.0.0.1, started by scripts/servers.sh: the store contract suite
# (tests/unit/test_store.c), a server that goes away in the middle of a
# write, and a guest checkpointed through each in every mode (stop-copy,
# cow, auto: live) and restored from each checkpoint.
. "$(dirname "$0")/lib.sh"
# (always the bzImage: FTP restores read a 66 MB uncompressed kernel a small
# range at a time, which took this test from 171 s to 395 s; issue 35)
KERNEL=$GUEST/vmlinuz
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
chmod 755 "$T" # the servers run as their own user
kinds="ftp sftp"
stop_servers() { for k in $kinds ftp2; do "$ROOT/scripts/servers.sh" stop "${k%2}" "$T/$k" 2>/dev/null; done; }
at_exit stop_servers

declare -A URI
for k in $kinds; do # each on a free port, as its own user
    if URI[$k]=$("$ROOT/scripts/servers.sh" start "$k" "$T/$k" 2>"$T/$k.err"); then
        ok "$k server starts on 127.0.0.1:$(cat "$T/$k/$k.port")"
    else
        not_ok "$k server starts" "$(tail -5 "$T/$k.err")"
    fi
done
# A second FTP server at once (another test's): each has an account of its
# own, so starting it does not change the first one's password.
if [ -n "${URI[ftp]:-}" ] && U2=$("$ROOT/scripts/servers.sh" start ftp "$T/ftp2" 2>"$T/ftp2.err"); then
    check "a second FTP server at once takes logins" "$BIN/store_bench" putobj "$U2" two/obj 1
    check "and the first one still takes its own" "$BIN/store_bench" putobj "${URI[ftp]}" one/obj 1
    u1=${URI[ftp]#ftp://}; u1=${u1%%:*}; u2=${U2#ftp://}; u2=${u2%%:*}
    [ "$u1" != "$u2" ] && [ "$(stat -c %U "$T/ftp/root")" = "$u1" ] && [ "$(stat -c %U "$T/ftp2/root")" = "$u2" ] \
        && ok "as two users ($u1, $u2)" || not_ok "two FTP servers, two users" "$(ls -ld "$T"/ftp*/root)"
    "$ROOT/scripts/servers.sh" stop ftp "$T/ftp2"
    ! id "$u2" >/dev/null 2>&1 && ok "a stopped server's account is removed" || not_ok "account $u2 removed at stop"
    "$BIN/store_bench" stat "${URI[ftp]}" one/obj >/dev/null && ok "the first server's account is left alone" \
        || not_ok "the first FTP server takes logins after the second stops"
else
    not_ok "a second FTP server starts" "$(tail -5 "$T/ftp2.err" 2>/dev/null)"
fi

for k in $kinds; do
    [ -n "${URI[$k]:-}" ] || continue
    if VMCKPT_TEST_STORE="${URI[$k]}" CMOCKA_MESSAGE_OUTPUT=TAP "$BIN/tests/test_store" > "$T/$k.tap" 2>&1; then
        ok "$k: the store contract suite passes ($(grep -c '^ok' "$T/$k.tap") cases)"
    else
        not_ok "$k: the store contract suite passes" "$(grep -A3 '^not ok' "$T/$k.tap" | head -8)"
    fi

    # The server goes away in the middle of a write: a clear error, nothing
    # committed; the same write works once it is back.
    VMCKPT_TEST_SEND_BPS=8000000 "$BIN/store_bench" putobj "${URI[$k]}" cut/obj 48 > "$T/$k.cut" 2>&1 &
    pid=$!
    # certainly in the middle: 2 MiB have reached the server, 46 to go (5.7 s at 8 MB/s)
    part() { find "$T/$k/root/cut" -name "obj.tmp-*" -size +2048k 2>/dev/null; }
    for _ in $(seq 600); do [ -n "$(part)" ] && break; sleep 0.1; done
    [ -n "$(part)" ] || not_ok "$k: the write reaches the server" "no part of cut/obj over 2 MiB there"
    "$ROOT/scripts/servers.sh" stop "$k" "$T/$k"
    if wait "$pid"; then
        not_ok "$k: a write cut by the server going away fails" "it succeeded"
    elif grep -q "cannot write cut/obj" "$T/$k.cut"; then
        ok "$k: a write cut by the server going away fails, naming the object"
    else
        not_ok "$k: the cut write names the object" "$(cat "$T/$k.cut")"
    fi
    check_fails "$k: a store that is down gives a clear error" "cannot open" "$BIN/store_bench" stat "${URI[$k]}" cut/obj
    "$ROOT/scripts/servers.sh" start "$k" "$T/$k" >/dev/null
    check_fails "$k: nothing of the cut write was committed" "does not exist" "$BIN/store_bench" stat "${URI[$k]}" cut/obj
    check "$k: the write works once the server is back" "$BIN/store_bench" putobj "${URI[$k]}" cut/obj 48
    [ "$("$BIN/store_bench" stat "${URI[$k]}" cut/obj)" = $((48 << 20)) ] && ok "$k: and the object is whole" \
        || not_ok "$k: and the object is whole"
done

# A guest checkpointed to each store, killed, and restored from it.
for k in $kinds; do
    [ -n "${URI[$k]:-}" ] || continue
    U=${URI[$k]} AGENT_ENV=
    if [ "$k" = ftp ]; then # the password never on a command line: from the environment
        pw=$(cat "$T/ftp/ftp.pass")
        U=${U/:$pw@/@}
        check_fails "ftp: a password on the agent's command line is refused" "VMCKPT_STORE_PASSWORD" \
            "$BIN/vmckptd" --state-dir "$T/pw" --store "${URI[$k]}"
        ! grep -q "$pw" "$T/last.out" && ok "ftp: and the refusal does not print it" || not_ok "ftp: the refusal prints the password"
        "$BIN/vmckptd" --state-dir "$T/pw" --store "${URI[$k]%%/root}x y/root" > "$T/bad.out" 2>&1
        ! grep -q "$pw" "$T/bad.out" && ok "ftp: a malformed URI's error does not print its password" \
            || not_ok "ftp: a malformed URI's error prints the password" "$(cat "$T/bad.out")"
        AGENT_ENV="VMCKPT_STORE_PASSWORD=$pw"
    else
        check_fails "sftp: a store without known_hosts is refused" "host key would not be checked" \
            "$BIN/vmckptd" --state-dir "$T/pw" --store "${U%%&known_hosts=*}"
    fi
    start_agent "a$k" --store "$U" || { not_ok "$k: agent starts on the store"; continue; }
    AGENT_ENV=
    ! tr '\0' ' ' < "/proc/$(eval echo "\$AGENT_a$k")/cmdline" | grep -q "${pw:-no-password-here}" \
        && ok "$k: no password on the agent's command line" || not_ok "$k: the agent's command line holds the password"
    check "$k: run a counter task" run_counter "a$k" "c$k" || continue
    S=$(serial_of "a$k" "c$k")
    wait_line "$S" '^counter 2$' 90
    # One checkpoint in each mode (the last one auto's choice), each restored.
    declare -A want=()
    i=0
    for m in stop-copy cow auto; do
        i=$((i + 1))
        check "$k: checkpoint $i ($m) commits" vk "a$k" checkpoint "c$k" --mode "$m"
        want[$i]=$(( $(counter_at "a$k" "c$k" "$i" "$S") + 1 ))
        wait_line "$S" "^counter $((want[$i] + 1))\$" 60
    done
    check "$k: kill -9 of the VM" vk "a$k" kill "c$k"
    for i in 1 2 3; do
        m=$(vk "a$k" --json show "c$k" "$i" | jq -r .mode)
        check "$k: restore checkpoint $i ($m) from the store" vk "a$k" restore "c$k" --checkpoint "$i"
        S2=$(serial_of "a$k" "c$k")
        wait_line "$S2" '^counter [0-9]' 60
        [ "$(first_counter "$S2")" = "${want[$i]}" ] && ok "$k: $m checkpoint resumes at counter ${want[$i]}" \
            || not_ok "$k: $m checkpoint resumes at counter ${want[$i]}" "$(got_counter "$S2")"
        wait_line "$S2" "^counter $((want[$i] + 2))\$" 60
        ! grep -aq MISMATCH "$S2" && ok "$k: $m checkpoint: disk matches memory" \
            || not_ok "$k: $m checkpoint: disk matches memory"
        [ "$i" = 3 ] || vk "a$k" kill "c$k" >/dev/null
    done
    check "$k: verify reads every object back" vk "a$k" verify "c$k"
    vk "a$k" rm "c$k" >/dev/null 2>&1
    stop_agent "a$k"
done
finish
