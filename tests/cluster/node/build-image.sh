#!/usr/bin/env bash
# Builds the lockmgr test-bed node image from Debian packages only:
#   OUT/vmlinuz      the generic Debian kernel (linux-image-amd64's dependency), unpacked, never installed
#   OUT/initrd.img   the whole node root as one uncompressed newc cpio (no disk image at all)
#   OUT/kernel-release
#
# Usage: build-image.sh KERNEL_PKG SRC_DIR CACHE_DIR OUT_DIR [BACKPORTS_LIST]
#   KERNEL_PKG  exact package, e.g. linux-image-6.1.0-56-amd64 (resolved by the caller from the meta package)
#   SRC_DIR     holds init, packages, dlm.conf, fence_testbed (tests/cluster/node/) and
#               fence_lockmgr_watchdog (daemon/)
#   CACHE_DIR   downloaded .debs are kept here between builds (kernel + debootstrap cache)
#   OUT_DIR     created; must not exist yet (the caller moves it into place when this succeeds)
#   BACKPORTS_LIST  a file in SRC_DIR naming more packages, installed with apt from
#               bookworm-backports (the libvirt flavour: libvirt 11 and QEMU 10, as on the host)
#
# Called by lockmgr-testbed (NodeImage::ensure), which decides whether a rebuild is needed.
# Must run as root (debootstrap, chroot, device nodes).
set -euo pipefail

if [ $# -ne 4 ] && [ $# -ne 5 ]; then
    echo "usage: $0 KERNEL_PKG SRC_DIR CACHE_DIR OUT_DIR [BACKPORTS_LIST]" >&2
    exit 2
fi
kernel_pkg=$1
src=$(realpath "$2")
cache=$(realpath -m "$3")
out=$(realpath -m "$4")
backports_list=${5:+$src/$5}

# The modules every node loads (init modprobes the same list), plus their dependencies, plus the
# watchdogs init loads for watchdog fencing (i6300esb, the emulated PCI one; softdog, a fallback).
node_modules="virtio_pci virtio_net virtio_console virtio_rng virtio_blk 9pnet_virtio 9p configfs dlm"
watchdog_modules="i6300esb softdog"

build_start=$(date +%s.%N)
# Each step line carries the time since the build started, so each step's duration reads off the next line.
step() {
    awk -v now="$(date +%s.%N)" -v start="$build_start" -v msg="$*" \
        'BEGIN { printf "[image] %6.1f s  %s\n", now - start, msg }'
}

die() { echo "[image] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot and device nodes need it)"
for tool in apt-get apt-cache dpkg debootstrap depmod modprobe cpio chroot; do
    command -v "$tool" >/dev/null || die "missing host tool '$tool' (Debian packages: apt, dpkg, debootstrap, kmod, cpio)"
done
for f in init packages dlm.conf fence_testbed fence_lockmgr_watchdog; do
    [ -f "$src/$f" ] || die "missing $src/$f"
done
[ ! -e "$out" ] || die "output directory $out already exists"
[ -z "$backports_list" ] || [ -f "$backports_list" ] || die "missing $backports_list"

mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or sources.list"

mkdir -p "$cache/debs/debootstrap"
work=$(mktemp -d "$cache/build.XXXXXX")
cleanup() {
    # debootstrap mounts proc and sys inside the target (and the backports step its apt cache);
    # never let rm walk into them
    for m in var/cache/apt/archives proc sys dev/pts dev; do
        mountpoint -q "$work/root/$m" 2>/dev/null && umount -l "$work/root/$m"
    done
    rm -rf --one-file-system "$work" "$out.tmp"
}
trap cleanup EXIT

# --- kernel ---------------------------------------------------------------------------------
version=$(apt-cache show --no-all-versions "$kernel_pkg" 2>/dev/null | awk '/^Version:/ { print $2; exit }')
[ -n "$version" ] || die "apt-cache knows no package $kernel_pkg (run apt-get update)"
deb="$cache/debs/${kernel_pkg}_${version//:/%3a}_amd64.deb"
if [ -f "$deb" ]; then
    step "kernel $kernel_pkg $version: cached .deb"
else
    step "downloading $kernel_pkg $version (about 70 MB)"
    (cd "$work" && apt-get download -q "$kernel_pkg=$version" 2>&1 | grep -v 'unsandboxed' || true)
    got=$(ls "$work"/"${kernel_pkg}"_*.deb 2>/dev/null | head -n 1)
    [ -n "$got" ] || die "apt-get download $kernel_pkg=$version produced no .deb"
    mv "$got" "$deb"
    # a new kernel ABI supersedes the old .deb: do not let them pile up in the cache
    find "$cache/debs" -maxdepth 1 -name 'linux-image-*.deb' ! -path "$deb" -delete
fi
step "unpacking the kernel"
kdir="$work/kernel"
dpkg -x "$deb" "$kdir"
kver=$(ls "$kdir/lib/modules" | head -n 1)
[ -n "$kver" ] && [ -f "$kdir/boot/vmlinuz-$kver" ] || die "no vmlinuz/modules in $deb"
depmod -b "$kdir" "$kver"

# --- root filesystem ------------------------------------------------------------------------
root="$work/root"
include=$(grep -v '^[[:space:]]*\(#\|$\)' "$src/packages" | tr -s ' \n' ',' | sed 's/,$//')
step "debootstrap bookworm minbase + $include"
if ! debootstrap --variant=minbase --cache-dir="$cache/debs/debootstrap" --include="$include" \
        bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log above)"
fi
# debootstrap may leave /proc or /sys mounted in the target; they must not end up in the cpio
for m in proc sys dev/pts dev; do
    if mountpoint -q "$root/$m" 2>/dev/null; then umount -l "$root/$m"; fi
done

if [ -n "$backports_list" ]; then
    backports=$(grep -v '^[[:space:]]*\(#\|$\)' "$backports_list" | tr -s ' \n' ' ')
    step "apt-get install -t bookworm-backports $backports"
    echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
    echo "deb $mirror bookworm-backports main" >>"$root/etc/apt/sources.list"
    # no daemon starts from a maintainer script: there is no init system in the chroot
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    mount -t proc proc "$root/proc"
    apt_in_root() {
        chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0 \
            -o Dir::Cache::archives=/var/cache/apt/archives "$@" </dev/null
    }
    mkdir -p "$cache/debs/backports" "$root/var/cache/apt/archives"
    mount --bind "$cache/debs/backports" "$root/var/cache/apt/archives"
    # shellcheck disable=SC2086 # the package list is meant to split
    if ! { apt_in_root update && apt_in_root install --no-install-recommends -t bookworm-backports $backports; } \
            >"$work/backports.log" 2>&1; then
        tail -n 40 "$work/backports.log" >&2
        umount "$root/var/cache/apt/archives" "$root/proc"
        die "installing the backports packages failed (log above)"
    fi
    umount "$root/var/cache/apt/archives" "$root/proc"
    rm -f "$root/usr/sbin/policy-rc.d"
fi

step "configuring the root"
chroot "$root" useradd -u 1000 -m -s /bin/sh lockmgr
rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,zoneinfo,common-licenses,bug,menu} \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/usr/lib/x86_64-linux-gnu/gconv "$root"/var/log/*.log "$root"/debootstrap
install -m 0755 "$src/init" "$root/init"
install -d "$root/etc/dlm" "$root/mnt/host" "$root/var/log/corosync"
install -m 0644 "$src/dlm.conf" "$root/etc/dlm/dlm.conf"
# dlm_controld's fence agent (fence_all in dlm.conf): asks the host to power a node off
install -m 0755 "$src/fence_testbed" "$root/usr/sbin/fence_testbed"
# The survivors' agent for watchdog fencing (dlmnode.fencing=watchdog): lockmgr's own, from daemon/
install -m 0755 "$src/fence_lockmgr_watchdog" "$root/usr/sbin/fence_lockmgr_watchdog"
# The kernel opens /dev/console of the initramfs before /init runs; without it init has no output.
[ -c "$root/dev/console" ] || mknod -m 600 "$root/dev/console" c 5 1
[ -c "$root/dev/null" ] || mknod -m 666 "$root/dev/null" c 1 3

step "copying kernel modules ($node_modules $watchdog_modules)"
mdir="$root/lib/modules/$kver"
mkdir -p "$mdir"
for mod in $node_modules $watchdog_modules; do
    deps=$(modprobe -d "$kdir" -S "$kver" --show-depends "$mod") || die "modprobe --show-depends $mod failed for $kver"
    echo "$deps" | awk '$1 == "insmod" { print $2 }' | while read -r ko; do
        rel=${ko#"$kdir/lib/modules/$kver/"}
        mkdir -p "$mdir/$(dirname "$rel")"
        cp "$ko" "$mdir/$rel"
    done
done
cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$mdir/"
depmod -b "$root" "$kver"

step "writing the initramfs (uncompressed newc cpio)"
mkdir -p "$out.tmp"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$out.tmp/initrd.img"
cp "$kdir/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
echo "$kver" >"$out.tmp/kernel-release"
echo "$kernel_pkg $version" >"$out.tmp/kernel-package"
mv "$out.tmp" "$out"

size=$(du -m "$out/initrd.img" | cut -f1)
step "initramfs $size MB, kernel $kver; removing the build tree"
rm -rf --one-file-system "$kdir" "$root"
step "done: $out"
