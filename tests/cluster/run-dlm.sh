#!/usr/bin/env bash
# Proves dlm.so and lockmgrd --backend dlm on real DLM clusters: a 2-node cluster for libvirt's
# calls across nodes, the daemon's crash and orphan adoption, a race test and node failure; a
# 3-node cluster for a partitioned node. Builds what it needs, boots and stops the clusters
# itself, and leaves nothing behind. Needs root, /dev/net/tun and qemu-system-x86.
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
cargo test -p lockmgr-testbed --test dlm --no-run
cargo test -p lockmgr-testbed --test dlm -- --ignored --nocapture --test-threads=1
echo "[run-dlm] total $(( $(date +%s) - start )) s"

leftover=$(comm -13 <(echo "$namespaces_before") <(ip netns list | awk '/^lockmgr-/ { print $1 }' | sort))
[ -z "$leftover" ] || fail "network namespaces left behind: $leftover"
