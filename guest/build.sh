#!/bin/bash
# Builds the test guest from Debian packages: a kernel (linux-image-amd64),
# an initramfs with busybox-static and guest/init, and a base disk image.
# Output in $1 (default build/guest): vmlinuz, vmlinux (the same kernel
# uncompressed, see below), initrd.img, base.qcow2.
# Idempotent: does nothing when the outputs are newer than their inputs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../build/guest}
mkdir -p "$out"; out=$(cd "$out" && pwd)
if [ -s "$out/vmlinuz" ] && [ -s "$out/vmlinux" ] && [ -s "$out/base.qcow2" ] && [ "$out/initrd.img" -nt "$here/init" ] \
   && [ "$out/initrd.img" -nt "$here/build.sh" ] && [ "$out/initrd.img" -nt "$here/counter.c" ]; then
    exit 0
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$kpkg" ] || { echo "guest: cannot find the kernel package behind linux-image-amd64 (run apt-get update)" >&2; exit 1; }
cache=$out/pkgcache; mkdir -p "$cache"
if ! ls "$cache"/${kpkg}_*.deb >/dev/null 2>&1; then
    (cd "$cache" && apt-get download "$kpkg" >/dev/null 2>&1) || { echo "guest: apt-get download $kpkg failed" >&2; exit 1; }
fi
dpkg-deb -x "$cache"/${kpkg}_*.deb "$work/k"
kver=${kpkg#linux-image-}
cp "$work/k/boot/vmlinuz-$kver" "$out/vmlinuz"
# The same kernel uncompressed: an ELF with a PVH entry point, which QEMU
# boots directly. Under TCG, unpacking the bzImage's XZ payload took 3.3 of
# a boot's 5.7 CPU seconds, and the test suite boots ~150 VMs (most tests
# use vmlinux; the demo, the evaluation and the benchmarks boot vmlinuz, as
# a user would). Where it cannot be had, vmlinux is the bzImage.
pvh_kernel() { # pvh_kernel BZIMAGE OUT
    local off
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$1" | head -n 1 | cut -d: -f1) || true
    if [ -n "$off" ] && { tail -c +$((off + 1)) "$1" | xz -dcq 2>/dev/null; true; } >"$2.tmp" \
       && readelf -n "$2.tmp" 2>/dev/null | grep -q '(0x00000012)'; then # XEN_ELFNOTE_PHYS32_ENTRY
        mv "$2.tmp" "$2"
    else
        echo "guest: no PVH kernel in $1 (the tests boot the bzImage)" >&2
        rm -f "$2.tmp"; cp "$1" "$2"
    fi
}
pvh_kernel "$out/vmlinuz" "$out/vmlinux"

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp /bin/busybox "$root/bin/busybox"
cp "$here/init" "$root/init"; chmod 755 "$root/init"
cc -static -O2 -s -Wall -Wextra -Werror -o "$root/bin/vkcounter" "$here/counter.c"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
    f=$(find "$work/k/lib/modules/$kver" -name "$m.ko*" | head -n 1)
    [ -n "$f" ] || { echo "guest: module $m not found in $kpkg" >&2; exit 1; }
    case "$f" in
        *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
        *.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
        *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
done
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img.tmp"

# Base disk, 1 GiB virtual: block 0 is the counter (zero), then 32 MiB of
# fixed pseudo-random data so the base has real content to store once.
head -c 1M /dev/zero > "$work/base.raw"
# (openssl dies of SIGPIPE when head has enough: not an error here)
{ openssl enc -aes-128-ctr -pass pass:vmckpt-base -nosalt -pbkdf2 < /dev/zero 2>/dev/null || true; } \
    | head -c 32M >> "$work/base.raw"
truncate -s 1G "$work/base.raw"
qemu-img convert -q -f raw -O qcow2 "$work/base.raw" "$out/base.qcow2.tmp"
mv "$out/base.qcow2.tmp" "$out/base.qcow2"
mv "$out/initrd.img.tmp" "$out/initrd.img"
echo "guest: built $out (kernel $kver)"
