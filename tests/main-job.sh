#!/usr/bin/env bash
# lockmgr's main job: build the plugins, then, with every daemon they need started here,
#  1. validate nop.so, file.so and libvirt's own lockd.so and sanlock.so step by step, and
#  2. run the conformance matrix: every scenario in tests/scenarios against nop.so, file.so,
#     lockd.so and libvirt's sanlock.so side by side (the matrix starts lockmgrd and virtlockd
#     itself, per cell, and one real sanlock daemon for the run — `sanlock daemon -w 0`, no
#     watchdog — whose lockspace the first drvInit joins in ~20 s; restart-daemon gets its own).
#  3. the dlm column: the same scenarios against nop.so, file.so and dlm.so on a 2-node DLM
#     cluster (corosync, dlm_controld, power fencing) booted in QEMU VMs by tests/cluster, with
#     dlm's second owners on the other node (tests/cluster/run-dlm-matrix.sh matrix; the node
#     image is built on first use, ~1 min, and cached in /var/cache/lockmgr). A machine that
#     cannot boot the test bed gets the reason, the rest still runs, and the job fails.
# Daemons run in a private mount namespace with its own /run (virtlockd's socket path is fixed),
# so the host is not touched; they are stopped by pid at the end.
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
rc=0
unshare --mount --propagation private bash "$PWD/tests/main-job-inside.sh" "$target" "$scratch" || rc=$?

echo "[main-job] the dlm column: dlm.so on a 2-node DLM cluster in QEMU VMs"
why_not=
[ -c /dev/net/tun ] || why_not="/dev/net/tun is missing (QEMU cannot create the nodes' tap devices)"
command -v qemu-system-x86_64 >/dev/null || why_not="qemu-system-x86_64 is not installed"
[ "$(id -u)" = 0 ] || why_not="it needs root (network namespaces, tap devices, debootstrap)"
if [ -n "$why_not" ]; then
    echo "[main-job] the dlm column cannot run on this machine: $why_not" >&2
    rc=1
elif ! tests/cluster/run-dlm-matrix.sh matrix; then
    echo "[main-job] the dlm column FAILED (see above)" >&2
    rc=1
fi
exit $rc
