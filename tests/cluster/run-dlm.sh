#!/usr/bin/env bash
# Proves dlm.so and lockmgrd --backend dlm on real DLM clusters with power fencing: a 2-node
# cluster for libvirt's calls across nodes, the daemon's crash and orphan adoption, a race test, a
# node crash and a split; a 3-node cluster for a partition and a node crash; and a 3-node control
# cluster without fencing whose partition check must observe the overlap. Builds what it needs,
# boots and stops the clusters itself, and leaves nothing behind. Needs root, /dev/net/tun and
# qemu-system-x86.
#
# Usage: tests/cluster/run-dlm.sh          (from anywhere; honours CARGO_TARGET_DIR)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."

fail() { echo "run-dlm.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root (network namespaces, tap devices, debootstrap)"
[ -c /dev/net/tun ] || fail "/dev/net/tun is missing: QEMU cannot create tap devices"

start=$(date +%s)
# Namespaces of the test bed present before this run (another run may be going on): only those
# that appear during this run and stay are ours to complain about.
namespaces_before=$(ip netns list | awk '/^lockmgr-/ { print $1 }' | sort)
cargo test -p lockmgr-testbed --test dlm --test dlm_daemon --no-run
cargo test -p lockmgr-testbed --test dlm -- --ignored --nocapture --test-threads=1
# lockmgrd --backend dlm crashed at every crash point, and abused, against the real DLM.
cargo test -p lockmgr-testbed --test dlm_daemon -- --ignored --nocapture --test-threads=1
echo "[run-dlm] total $(( $(date +%s) - start )) s"

# A namespace is named lockmgr-<pid of the process that owns the cluster>-<n>: one whose owner still
# runs belongs to another run going on meanwhile, not to this one.
leftover=$(comm -13 <(echo "$namespaces_before") <(ip netns list | awk '/^lockmgr-/ { print $1 }' | sort) |
    while read -r ns; do owner=${ns#lockmgr-}; [ -d "/proc/${owner%%-*}" ] || echo "$ns"; done)
[ -z "$leftover" ] || fail "network namespaces left behind: $leftover"
