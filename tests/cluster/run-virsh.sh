#!/usr/bin/env bash
# dlm.so under a real libvirtd on both nodes of a 2-node DLM cluster: lockmgr installed in the
# nodes from its Debian packages, domains started, suspended, hot-plugged and live-migrated with
# virsh, the holder named in refusals, a node crash with power fencing, and a control run with
# libvirt's nop lock manager that must show the double start (tests/cluster/tests/virsh.rs).
# Builds the packages when target/debian has none (tests/package/run.sh --build-only), boots and
# stops the cluster itself, and leaves nothing behind. Needs root, /dev/net/tun and qemu-system-x86.
#
# Usage: tests/cluster/run-virsh.sh          (from anywhere; honours CARGO_TARGET_DIR)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."

fail() { echo "run-virsh.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root (network namespaces, tap devices, debootstrap)"
[ -c /dev/net/tun ] || fail "/dev/net/tun is missing: QEMU cannot create tap devices"

start=$(date +%s)
namespaces_before=$(ip netns list | awk '/^lockmgr-/ { print $1 }' | sort)
if ! ls target/debian/libvirt-daemon-plugin-lockmgr-dlm_*_amd64.deb >/dev/null 2>&1; then
    tests/package/run.sh --build-only
fi
cargo test -p lockmgr-testbed --test virsh --no-run
cargo test -p lockmgr-testbed --test virsh -- --ignored --nocapture --test-threads=1
echo "[run-virsh] total $(( $(date +%s) - start )) s"

leftover=$(comm -13 <(echo "$namespaces_before") <(ip netns list | awk '/^lockmgr-/ { print $1 }' | sort) |
    while read -r ns; do owner=${ns#lockmgr-}; [ -d "/proc/${owner%%-*}" ] || echo "$ns"; done)
[ -z "$leftover" ] || fail "network namespaces left behind: $leftover"
