#!/bin/bash
# Starts and stops the real FTP and SFTP servers the tests and benchmarks use:
# vsftpd and OpenSSH's sshd with their own configuration files and keys, on
# 127.0.0.1 only, as the user 'vkstore' (created if missing).
#
#   scripts/servers.sh start ftp|sftp DIR PORT   prints the store URI to use
#   scripts/servers.sh stop  ftp|sftp DIR
#
# DIR holds the configuration, keys, logs, pid file and the served directory
# (DIR/root). Start is idempotent: a server already running from DIR is reused.
set -euo pipefail
cmd=${1:?usage: servers.sh start|stop ftp|sftp DIR [PORT]}
kind=${2:?usage: servers.sh start|stop ftp|sftp DIR [PORT]}
dir=${3:?usage: servers.sh start|stop ftp|sftp DIR [PORT]}
port=${4:-}
user=vkstore

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

ensure_user() {
    id "$user" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$user"
    mkdir -p "$dir/root"
    chown "$user" "$dir/root"
    chmod 755 "$dir"
}

start_ftp() {
    command -v vsftpd >/dev/null || { echo "servers.sh: vsftpd is not installed (scripts/setup.sh)" >&2; exit 1; }
    ensure_user
    [ -s "$dir/ftp.pass" ] || head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/ftp.pass"
    echo "$user:$(cat "$dir/ftp.pass")" | chpasswd
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
    ensure_user
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

case $cmd in
start)
    mkdir -p "$dir"
    if ! running; then
        [ -n "$port" ] || port=$(cat "$dir/$kind.port" 2>/dev/null) ||
            { echo "servers.sh: start needs a PORT" >&2; exit 2; }
        "start_$kind"
    fi
    uri
    ;;
stop)
    if running; then # the server and every session it forked (they may setsid)
        pids=$(tree_of "$(cat "$dir/$kind.pid")")
        kill -9 $pids 2>/dev/null || true
        for _ in $(seq 50); do running || break; sleep 0.1; done
    fi
    rm -f "$dir/$kind.pid"
    ;;
uri) uri ;;
*) echo "usage: servers.sh start|stop|uri ftp|sftp DIR [PORT]" >&2; exit 2 ;;
esac
