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

# shellcheck source=tests/cluster/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

preflight

if ! ls target/debian/libvirt-daemon-plugin-lockmgr-dlm_*_amd64.deb >/dev/null 2>&1; then
    tests/package/run.sh --build-only
fi
cargo test -p lockmgr-testbed --test virsh --no-run
cargo test -p lockmgr-testbed --test virsh -- --ignored --nocapture --test-threads=1
echo "[run-virsh] total $(( $(date +%s) - start )) s"

leftover=$(left_behind)
[ -z "$leftover" ] || fail "network namespaces left behind: $leftover"
