#!/usr/bin/env bash
# The conformance matrix and the benchmark on a real 2-node DLM cluster: `lockmgr-loader-test
# matrix` prints nop, file and dlm side by side (dlm's owners on both nodes, through the agent on
# node2), and `lockmgr-loader-test bench` times dlm.so against the raw libdlm floor (dlm-floor),
# with the resources mastered on node1 and on node2, then the boot storm on both nodes and the
# scale suite on node1 (10,000 DLM locks; lockmgrd's restart adopting 10,000 orphans). Release
# build (the benchmark's figures mean nothing in a debug build). Builds what it needs, boots and
# stops the clusters itself, and leaves nothing behind. Needs root, /dev/net/tun and qemu-system-x86.
#
# Usage: tests/cluster/run-dlm-matrix.sh [matrix|bench]   (default both; honours CARGO_TARGET_DIR,
#        DLMX_ITERATIONS_LOCAL (1000) and DLMX_ITERATIONS_REMOTE (100))
set -euo pipefail

# shellcheck source=tests/cluster/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

preflight

case "${1:-both}" in
    matrix) filter=(matrix_with_dlm_owners_on_two_nodes) ;;
    bench) filter=(dlm_so_against_the_raw_libdlm_floor) ;;
    both) filter=() ;;
    *) fail "usage: $0 [matrix|bench]" ;;
esac

cargo build --release -p lockmgrd -p lockmgr-loader-test -p lockmgr-plugin-dlm \
    -p lockmgr-plugin-file -p lockmgr-plugin-nop -p lockmgr-testbed
cargo test --release -p lockmgr-testbed --test dlm_matrix --no-run
built=$(date +%s)
cargo test --release -p lockmgr-testbed --test dlm_matrix -- --ignored --nocapture --test-threads=1 "${filter[@]}"
end=$(date +%s)
echo "[run-dlm-matrix] total $((end - start)) s (build $((built - start)) s, cluster runs $((end - built)) s)"

leftover=$(left_behind)
[ -z "$leftover" ] || fail "network namespaces left behind: $leftover"
