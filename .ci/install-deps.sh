#!/usr/bin/env bash
# Installs everything lockmgr's builds and tests need on a fresh Debian 12 machine.
# Idempotent: packages already present are skipped by apt; safe to run on every CI run.
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*" >&2; }

# libvirt 11.x and QEMU 10 must come from bookworm-backports (the machine's qemu-utils already does).
backports=/etc/apt/sources.list.d/bookworm-backports.list
if [ ! -f "$backports" ]; then
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    log "adding bookworm-backports from $mirror"
    echo "deb $mirror bookworm-backports main" >"$backports"
    rm -f /var/lib/lockmgr-apt-updated
fi

packages=(
    # plugins of libvirt's own, for the loader-test matrix, and libvirtd for the end-to-end test
    qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system libvirt-clients
    libvirt-daemon-lock libvirt-daemon-plugin-lockd libvirt-daemon-plugin-sanlock libvirt-dev
    # DLM: headers and libraries for the bindings; cluster daemons are only used inside the VMs
    libdlm3 libdlm-dev dlm-controld corosync sanlock libsanlock-dev
    # votequorum (self-fencing: lockmgrd follows quorum) and cpg (lockmgr status --cluster),
    # headers for the bindings
    libvotequorum-dev libcpg-dev
    # build tools: bindgen needs libclang; binutils gives nm/readelf for the export checks
    clang libclang-dev pkg-config binutils
    # the cluster test bed builds its node image from Debian packages
    debootstrap cpio kmod iproute2 util-linux procps
    # the Debian packages (tests/package/run.sh): dpkg-buildpackage, lintian, the units
    # (systemd-analyze verify, man for their Documentation=), the lenses (augparse, augtool)
    debhelper dpkg-dev lintian systemd man-db augeas-tools python3
)

# The cluster test bed resolves the node kernel with apt-cache, which needs package lists even
# when every host package is already installed.
if ! ls /var/lib/apt/lists/*bookworm-backports*Packages* >/dev/null 2>&1; then
    log "apt lists for bookworm-backports missing: apt-get update"
    apt-get update -q && touch /var/lib/lockmgr-apt-updated
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "all ${#packages[@]} packages present"
    exit 0
fi

log "installing: ${missing[*]}"
# apt may be busy (another install on a shared machine): retry while the dpkg lock is held
for attempt in 1 2 3 4 5 6; do
    if [ ! -f /var/lib/lockmgr-apt-updated ] || [ "$attempt" -gt 1 ]; then
        apt-get update -q && touch /var/lib/lockmgr-apt-updated || true
    fi
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -t bookworm-backports "${missing[@]}"; then
        log "done"
        exit 0
    fi
    log "apt-get failed (attempt $attempt); retrying in 10 s"
    sleep 10
done
log "could not install: ${missing[*]}"
exit 1
