#!/bin/bash
# Backends chosen at build time: a build without RADOS (RADOS=0, as on a
# machine without librados-dev) links no librados, says so in --help, and
# refuses a rados:// store naming what to install; the directory store works
# in it. The client links librados in no build. Prints TAP.
# Usage: tests/build_options.sh [DEFAULT_BUILD_DIR]   (default build/san)
set -u
cd "$(dirname "$0")/.."
B=${1:-build/san}
NB=build/rel-norados
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); echo "not ok $n - $1"; [ -n "${2:-}" ] && echo "$2" | sed 's/^/#   /'; }
check() { if eval "$2"; then ok "$1"; else not_ok "$1" "${3:-}"; fi; }

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if make -s RADOS=0 all >"$tmp/build.log" 2>&1; then ok "builds with RADOS=0"
else not_ok "builds with RADOS=0" "$(tail -20 "$tmp/build.log")"; echo "1..$n"; exit 1; fi
check "RADOS=0: the agent links no librados" "! ldd $NB/vmckptd | grep -q librados"
check "RADOS=0: nor does the client" "! ldd $NB/vmckpt | grep -q librados"
check "RADOS=0: --help says rados is left out" \
    "$NB/vmckptd --help | grep -q 'Stores in this build: file, ftp, sftp (rados left out'"
out=$("$NB/vmckptd" --state-dir "$tmp/state" --store 'rados://pool?conf=/etc/ceph/ceph.conf' 2>&1)
check "RADOS=0: a rados:// store is refused, naming what to install" \
    "echo \"\$out\" | grep -q 'rados:// is not in this build of vmckpt: it was built without librados-dev'" "$out"
head -c 3000000 /dev/urandom >"$tmp/f"
check "RADOS=0: the directory store stores and reads a stream back" \
    "$NB/store_bench roundtrip file://$tmp/store $tmp/f $tmp/back >/dev/null 2>&1 && cmp -s $tmp/f $tmp/back"
if printf '#include <rados/librados.h>\n' | cc -E -x c - >/dev/null 2>&1; then
    check "default build (librados-dev here): rados is in" \
        "$B/vmckptd --help | grep -q 'Stores in this build: file, rados, ftp, sftp.'"
    check "default build: the client links no librados" "! ldd $B/vmckpt | grep -q librados"
fi
echo "1..$n"
