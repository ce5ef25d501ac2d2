#!/usr/bin/env bash
# Proves the libdlm bindings on a real DLM cluster: builds the node image if needed (Debian
# packages only, cached in /var/cache/lockmgr), boots 2 QEMU nodes with corosync + dlm_controld
# in a private network namespace, runs dlm-proof in them, prints a summary table with latency and
# failover figures, and stops everything. Needs root, /dev/net/tun and qemu-system-x86.
#
# Usage: tests/cluster/run-proof.sh          (from anywhere; honours CARGO_TARGET_DIR)
set -euo pipefail

# shellcheck source=tests/cluster/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

preflight

echo "[run-proof] building dlm-proof and the proof test"
cargo test -p lockmgr-testbed --test proof --no-run
built=$(date +%s)
echo "[run-proof] build took $((built - start)) s; running the proof (about 1-2 minutes)"
cargo test -p lockmgr-testbed --test proof -- --ignored --nocapture --test-threads=1
end=$(date +%s)
echo "[run-proof] total $((end - start)) s (build $((built - start)) s, proof $((end - built)) s)"

# The harness stops what it started; say so if anything of ours is still around.
leftover=$(left_behind)
[ -z "$leftover" ] || echo "[run-proof] warning: namespaces still present: $leftover (lockmgr-testbed down removes leftovers)" >&2
