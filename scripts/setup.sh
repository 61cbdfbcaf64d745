#!/bin/bash
# Installs what vmckpt needs to build, run and test, from Debian packages:
# the build tools and libraries, QEMU, the tools the guest build and the
# tests call, and the servers the tests start themselves (Ceph, vsftpd, sshd;
# none is enabled or started here).
# Idempotent: when everything is there it only checks and says so.
# Any failure names what failed and exits non-zero.
# Settings: SETUP_LOG (where apt's output goes; default a temporary file that
# is kept only when something fails).
set -uo pipefail

PKGS=(
    # build
    gcc make pkg-config
    libjansson-dev libssl-dev libzstd-dev liblz4-dev libmicrohttpd-dev libinih-dev
    libcurl4-openssl-dev libcmocka-dev librados-dev
    # run: QEMU, and what guest/build.sh uses (the kernel comes from
    # linux-image-amd64 through apt-get download, the initramfs from busybox)
    qemu-system-x86 qemu-utils busybox-static cpio gzip xz-utils zstd openssl
    # the demo, the tests and the benchmarks
    jq bc procps iproute2 perl util-linux coreutils git mmdebstrap curl
    # the fuzz harnesses (libFuzzer comes with clang's runtime)
    clang libclang-rt-14-dev
    ceph-mon ceph-osd ceph-common vsftpd openssh-server openssh-client stress-ng
    # the evaluation's plots (make eval)
    gnuplot-nox
)
# Commands that must work once the packages are in (a package can be
# "installed" and still broken or diverted).
CMDS=(cc make pkg-config qemu-system-x86_64 qemu-img busybox cpio gzip xz zstd openssl
      jq bc pkill ip perl git mmdebstrap curl clang setpriv ceph-mon ceph-osd ceph vsftpd ssh-keygen stress-ng gnuplot)

say() { echo "setup: $*"; }
die() { echo "setup: FAILED: $*" >&2; exit 1; }

installed() { # a package counts when dpkg says "installed" (not merely known)
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing_pkgs() {
    local p
    for p in "${PKGS[@]}"; do installed "$p" || echo "$p"; done
}

command -v dpkg-query >/dev/null && command -v apt-get >/dev/null \
    || die "this script needs a Debian system (dpkg-query and apt-get not found)"

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "run as root, or install sudo: packages must be installed"
    SUDO=sudo
fi

log=${SETUP_LOG:-$(mktemp /tmp/vmckpt-setup.XXXXXX)}
keep_log=0
trap '[ "$keep_log" = 1 ] || [ -n "${SETUP_LOG:-}" ] || rm -f "$log"' EXIT

run_apt() { # run_apt WHAT ARGS...: apt-get with its output in the log
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get "$@" >>"$log" 2>&1; then
        keep_log=1
        echo "setup: apt-get $1 said:" >&2
        tail -n 20 "$log" | sed 's/^/    /' >&2
        die "apt-get $* (full output: $log)"
    fi
}

mapfile -t missing < <(missing_pkgs)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${#missing[@]} of ${#PKGS[@]} Debian packages: ${missing[*]}"
    say "apt-get update (output: $log)"
    run_apt update
    say "apt-get install (with their dependencies; this takes a few minutes on a fresh machine)"
    start=$SECONDS
    run_apt install -y --no-install-recommends "${missing[@]}"
    mapfile -t still < <(missing_pkgs)
    [ ${#still[@]} -eq 0 ] || { keep_log=1; die "still not installed after apt-get install: ${still[*]} (log: $log)"; }
    say "installed in $((SECONDS - start)) s"
else
    say "all ${#PKGS[@]} Debian packages are installed"
fi

bad=()
for c in "${CMDS[@]}"; do command -v "$c" >/dev/null || bad+=("$c"); done
# sshd and friends live in /usr/sbin, which a non-root PATH may lack
for c in sshd; do [ -x "/usr/sbin/$c" ] || bad+=("/usr/sbin/$c"); done
[ ${#bad[@]} -eq 0 ] || die "commands missing although their packages are installed: ${bad[*]}"

# The guest kernel is fetched with apt-get download, which needs the package
# lists (a fresh image may ship none).
if [ -z "$(apt-cache policy linux-image-amd64 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {print $2}')" ]; then
    say "apt-get update (the package lists are needed to fetch the guest kernel)"
    run_apt update
    [ -n "$(apt-cache policy linux-image-amd64 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {print $2}')" ] \
        || die "no candidate for linux-image-amd64 in the package lists (check /etc/apt/sources.list*)"
fi
say "ready"
