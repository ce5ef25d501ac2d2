#!/usr/bin/env bash
# lockmgr's main job: build the plugins, then, with every daemon they need started here,
#  1. validate nop.so, file.so and libvirt's own lockd.so and sanlock.so step by step, and
#  2. run the conformance matrix: every scenario in tests/scenarios against nop.so, file.so,
#     lockd.so and libvirt's sanlock.so side by side (the matrix starts lockmgrd and virtlockd
#     itself, per cell, and one real sanlock daemon for the run — `sanlock daemon -w 0`, no
#     watchdog — whose lockspace the first drvInit joins in ~20 s; restart-daemon gets its own).
# Daemons run in a private mount namespace with its own /run (virtlockd's socket path is fixed),
# so the host is not touched; they are stopped by pid at the end. dlm.so needs a DLM cluster:
# tests/cluster/run-dlm.sh runs it on one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
echo "[main-job] building (release)"
cargo build --release --quiet -p lockmgr-loader-test -p lockmgr-plugin-nop -p lockmgr-plugin-file -p lockmgrd
target=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)
scratch=$(mktemp -d /tmp/lockmgr-main-job.XXXXXX)
chmod 0755 "$scratch"
trap 'rm -rf "$scratch"' EXIT
cp "$target/libnop.so" "$scratch/nop.so"
cp "$target/libfile.so" "$scratch/file.so"
printf '%s\n' \
    "file_lockspace_dir = \"$scratch/lockspace\"" \
    'socket_path = "/run/lockmgr/file.sock"' \
    'state_dir = "/run/lockmgr/file-state"' >"$scratch/qemu-file.conf"

# Not exec: the EXIT trap above must still remove the scratch directory afterwards.
unshare --mount --propagation private bash "$PWD/tests/main-job-inside.sh" "$target" "$scratch"
