#!/usr/bin/env bash
# Prints the path of a cached tarball of a clean Debian 12 root for the package test, building it
# when missing: debootstrap --variant=minbase bookworm, bookworm-backports in its sources, and
# the packages lockmgr's packages depend on already installed (libvirt-daemon 11.x from backports,
# libdlm3, libvotequorum8, libcpg4), so that installing lockmgr's .debs in it needs no download.
#
# The tarball lives outside the repository, in /var/cache/lockmgr/ (LOCKMGR_CACHE overrides), and
# is rebuilt when missing or older than its recipe (this file). About 1 to 2 minutes to build.
set -euo pipefail

cache=${LOCKMGR_CACHE:-/var/cache/lockmgr}
# The recipe's version: bump it when the root's content changes.
recipe=2
tarball=$cache/pkgtest-bookworm-r$recipe.tar.gz
log() { printf '[base-root] %s\n' "$*" >&2; }

if [ -s "$tarball" ]; then
    echo "$tarball"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/pkgtest.lock"
flock 9
if [ -s "$tarball" ]; then
    echo "$tarball"
    exit 0
fi

mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d "$cache/pkgtest-build.XXXXXX")
root=$work/root
cleanup() {
    for m in proc dev/pts dev; do
        mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m" || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

started=$(date +%s)
log "debootstrap bookworm (minbase) from $mirror into $root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2
    exit 1
}
echo "deb $mirror bookworm-backports main" >"$root/etc/apt/sources.list.d/bookworm-backports.list"
# No daemon may start inside the root (there is no init in it anyway).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
log "installing libvirt-daemon 11.x (backports), libdlm3, libvotequorum8, libcpg4 into the root"
unshare --mount --propagation private -- sh -euc '
    root=$1
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    chroot "$root" apt-get update -q
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends -t bookworm-backports libvirt-daemon libdlm3 libvotequorum8 libcpg4
    chroot "$root" apt-get clean
' sh "$root" >"$work/apt.log" 2>&1 || {
    tail -30 "$work/apt.log" >&2
    exit 1
}
tar -C "$root" --numeric-owner -czf "$work/root.tar.gz" .
mv "$work/root.tar.gz" "$tarball"
log "built $tarball ($(du -h "$tarball" | cut -f1)) in $(($(date +%s) - started)) s"
echo "$tarball"
