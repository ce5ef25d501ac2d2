#!/usr/bin/env bash
# lockmgr's main job: build the plugins and check each one, side by side with libvirt's own
# lockd.so (against a virtlockd started here, in a private mount namespace) and sanlock.so.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
cargo build --release --quiet -p lockmgr-loader-test -p lockmgr-plugin-nop
plugins=$(mktemp -d /tmp/lockmgr-plugins.XXXXXX)
trap 'rm -rf "$plugins"' EXIT
cp target/release/libnop.so "$plugins/nop.so"
loader=$PWD/target/release/lockmgr-loader-test
# virtlockd's socket path is fixed (/run/libvirt/virtlockd-sock): give it a private /run so the
# host's /run is never touched, and stop it by pid when done.
exec unshare --mount --propagation private sh -c '
    set -e
    mount -t tmpfs tmpfs /run
    mkdir -p /run/libvirt
    virtlockd --daemon --pid-file /run/virtlockd.pid
    i=0; while [ ! -S /run/libvirt/virtlockd-sock ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
    rc=0
    "$1" validate "$2/nop.so" lockd sanlock "$@" || rc=$?
    kill "$(cat /run/virtlockd.pid)"
    exit $rc
' main-job "$loader" "$plugins"
