#!/usr/bin/env bash
# Proves dlm.so and lockmgrd --backend dlm on real DLM clusters with power fencing: a 2-node
# cluster for the holder named across nodes, the daemon's crash and orphan adoption, a race test, a
# node crash and a split; a 3-node cluster for a partition and a node crash; and a 3-node control
# cluster without fencing whose partition check must observe the overlap. Builds what it needs,
# boots and stops the clusters itself, and leaves nothing behind. Needs root, /dev/net/tun and
# qemu-system-x86.
#
# Usage: tests/cluster/run-dlm.sh          (from anywhere; honours CARGO_TARGET_DIR)
set -euo pipefail

# shellcheck source=tests/cluster/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

preflight

cargo test -p lockmgr-testbed --test dlm --test dlm_daemon --no-run
cargo test -p lockmgr-testbed --test dlm -- --ignored --nocapture --test-threads=1
# lockmgrd --backend dlm crashed at every crash point, and abused, against the real DLM.
cargo test -p lockmgr-testbed --test dlm_daemon -- --ignored --nocapture --test-threads=1
echo "[run-dlm] total $(( $(date +%s) - start )) s"

leftover=$(left_behind)
[ -z "$leftover" ] || fail "network namespaces left behind: $leftover"
