#!/bin/bash
# Installs what vmckpt needs to build, run and test, from Debian packages:
# the build tools and libraries, QEMU, and the servers the tests start
# themselves (Ceph, vsftpd, sshd; none is enabled or started here).
# Idempotent: when everything is there it only checks and returns.
set -euo pipefail
PKGS="gcc make pkg-config qemu-system-x86 qemu-utils busybox-static cpio openssl jq bc
      libjansson-dev libssl-dev libzstd-dev liblz4-dev libmicrohttpd-dev libinih-dev libcurl4-openssl-dev libcmocka-dev
      librados-dev ceph-mon ceph-osd ceph-common vsftpd openssh-server openssh-client"
missing=$(dpkg-query -W -f='${Package} ${Status}\n' $PKGS 2>/dev/null | awk '$NF != "installed" {print $1}')
for p in $PKGS; do dpkg-query -W "$p" >/dev/null 2>&1 || missing="$missing $p"; done
missing=$(echo $missing | tr ' ' '\n' | sort -u | tr '\n' ' ')
if [ -n "${missing// }" ]; then
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "setup: installing $missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The guest kernel comes from linux-image-amd64 via apt-get download, which needs the lists.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
fi
