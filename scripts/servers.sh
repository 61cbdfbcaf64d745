#!/bin/bash
# Starts and stops the real FTP and SFTP servers the tests and benchmarks use:
# vsftpd and OpenSSH's sshd with their own configuration files and keys, on
# 127.0.0.1 only, each as a system user of its own (vk-<hash of DIR>, made at
# start with a random password, removed at stop): two servers never share an
# account, so one's password is never another's (two FTP tests at once once
# locked each other out with "530 Login denied").
#
#   scripts/servers.sh start ftp|sftp DIR [PORT]   prints the store URI to use
#   scripts/servers.sh stop  ftp|sftp DIR
#   scripts/servers.sh user  ftp|sftp DIR        the account DIR's servers run as
#
# PORT: a free one is picked when it is missing or 'auto' (and another is
# tried if the server cannot have it). DIR holds the configuration, keys,
# logs, pid file and the served directory (DIR/root). Start is idempotent: a
# server already running from DIR is reused. A start that fails ends what it
# started and says why.
set -euo pipefail
cmd=${1:?usage: servers.sh start|stop ftp|sftp DIR [PORT]}
kind=${2:?usage: servers.sh start|stop ftp|sftp DIR [PORT]}
dir=${3:?usage: servers.sh start|stop ftp|sftp DIR [PORT]}
port=${4:-}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
user=vk-$(printf '%s' "$dir" | sha256sum | cut -c1-12)

tree_of() { # a pid and all its descendants
    local p c
    for p in "$@"; do
        echo "$p"
        for c in $(pgrep -P "$p"); do tree_of "$c"; done
    done
}

running() { [ -f "$dir/$kind.pid" ] && kill -0 "$(cat "$dir/$kind.pid")" 2>/dev/null; }

uri() {
    case $kind in
    ftp) echo "ftp://$user:$(cat "$dir/ftp.pass")@127.0.0.1:$(cat "$dir/ftp.port")/root" ;;
    sftp) echo "sftp://$user@127.0.0.1:$(cat "$dir/sftp.port")$dir/root?key=$dir/client_key&known_hosts=$dir/known_hosts" ;;
    esac
}

wait_port() { # the server listens, or we give up after 10 s
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        running || break
        sleep 0.1
    done
    echo "servers.sh: $kind server did not come up on 127.0.0.1:$1; its log:" >&2
    tail -n 20 "$dir/$kind.log" >&2 || true
    return 1
}

. "$(dirname "${BASH_SOURCE[0]}")/port.sh"

# useradd and userdel lock /etc/passwd: another test's at the same moment
# makes them fail "try again later", so they are tried again.
retry_lock() {
    for _ in $(seq 50); do "$@" 2>"$dir/user.err" && return 0; grep -q lock "$dir/user.err" || break; sleep 0.2; done
    echo "servers.sh: $* failed: $(cat "$dir/user.err")" >&2
    return 1
}

ensure_user() {
    mkdir -p "$dir/root"
    # ("*": no password, but not locked: sshd refuses a locked account a key login)
    if ! id "$user" >/dev/null 2>&1; then
        retry_lock useradd --system --password "*" --no-create-home --home-dir "$dir" --shell /bin/bash "$user" || return 1
        # a server started again after a stop: its new account owns what the old one wrote
        chown -R "$user" "$dir/root"
    fi
    chown "$user" "$dir/root"
    chmod 755 "$dir"
}

# SHA-512 crypt of 1000 rounds, not the system's default (yescrypt through
# PAM): vsftpd checks the password at every login, twice, and the FTP store
# logs in again for each ranged read; yescrypt took 16 MiB and 0.45 s of a
# loaded CPU each time (193 ms of CPU a session), SHA-512 0.2 ms. The
# password is random, the account this server's alone, the server on
# 127.0.0.1 or in a test's own namespace.
set_password() { chpasswd -c SHA512 -s 1000 <<<"$user:$(cat "$dir/ftp.pass")"; }

# Ends a server that did not come up, and its account, then fails.
start_failed() { stop_server; exit 1; }

start_ftp() {
    command -v vsftpd >/dev/null || { echo "servers.sh: vsftpd is not installed (scripts/setup.sh)" >&2; exit 1; }
    ensure_user || return 1
    [ -s "$dir/ftp.pass" ] || head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/ftp.pass"
    retry_lock set_password || return 1
    echo "$port" > "$dir/ftp.port"
    mkdir -p /var/run/vsftpd/empty
    cat > "$dir/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$port
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
local_root=$dir
pam_service_name=vsftpd
chroot_local_user=NO
pasv_enable=YES
pasv_address=127.0.0.1
# A wide passive range: every transfer leaves its data port in TIME_WAIT for a
# minute, and vsftpd waits a second for each port it finds taken.
pasv_min_port=40000
pasv_max_port=49999
max_clients=200
max_per_ip=200
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
use_localtime=NO
xferlog_enable=NO
dual_log_enable=NO
log_ftp_protocol=NO
vsftpd_log_file=$dir/ftp.log
secure_chroot_dir=/var/run/vsftpd/empty
EOF
    # its own session, so that stop ends the sessions it forked too
    setsid vsftpd "$dir/vsftpd.conf" >>"$dir/ftp.log" 2>&1 &
    echo $! > "$dir/ftp.pid"
    wait_port "$port"
}

start_sftp() {
    [ -x /usr/sbin/sshd ] || { echo "servers.sh: openssh-server is not installed (scripts/setup.sh)" >&2; exit 1; }
    ensure_user || return 1
    echo "$port" > "$dir/sftp.port"
    mkdir -p /run/sshd
    [ -f "$dir/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
    [ -f "$dir/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key"
    cp "$dir/client_key.pub" "$dir/authorized_keys"
    chmod 644 "$dir/authorized_keys"
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_key.pub")" > "$dir/known_hosts"
    cat > "$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid.unused
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers $user
MaxSessions 100
MaxStartups 100:30:200
Subsystem sftp internal-sftp
EOF
    setsid /usr/sbin/sshd -D -e -f "$dir/sshd_config" >>"$dir/sftp.log" 2>&1 &
    echo $! > "$dir/sftp.pid"
    wait_port "$port"
}

stop_server() { # the server and every session it forked (they may setsid), then its account
    if running; then
        pids=$(tree_of "$(cat "$dir/$kind.pid")")
        kill -9 $pids 2>/dev/null || true
        for _ in $(seq 50); do running || break; sleep 0.1; done
    fi
    rm -f "$dir/$kind.pid"
    # the account goes with the last of DIR's servers
    local other=ftp; [ "$kind" = ftp ] && other=sftp
    if ! { [ -f "$dir/$other.pid" ] && kill -0 "$(cat "$dir/$other.pid")" 2>/dev/null; } &&
        id "$user" >/dev/null 2>&1; then
        retry_lock userdel "$user" || true
    fi
}

case $cmd in
start)
    if ! running; then
        auto=0
        [ -n "$port" ] || port=$(cat "$dir/$kind.port" 2>/dev/null) || port=auto
        [ "$port" = auto ] && auto=1
        for try in 1 2 3 4 5; do
            [ $auto = 1 ] && { port=$(pick_port) || start_failed; }
            "start_$kind" 2>>"$dir/start.err" && break
            # a port taken between the pick and the bind: another one
            if [ $auto = 1 ] && [ $try -lt 5 ] && grep -qi "in use\|could not bind\|cannot assign" "$dir/$kind.log" 2>/dev/null; then
                stop_server; : > "$dir/$kind.log"; continue
            fi
            cat "$dir/start.err" >&2
            start_failed
        done
    fi
    uri
    ;;
stop) stop_server ;;
uri) uri ;;
user) echo "$user" ;;
*) echo "usage: servers.sh start|stop|uri|user ftp|sftp DIR [PORT]" >&2; exit 2 ;;
esac
