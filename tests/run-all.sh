#!/usr/bin/env bash
# Runs every lockmgr test on a Debian 12 machine (as root): installs what is missing, checks
# formatting and lints, runs the workspace's tests, then the layers that need real parts: a real
# libvirtd + QEMU, and real corosync/DLM clusters in QEMU nodes. A layer that cannot run here
# fails with the reason; nothing is skipped.
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

section "Debian packages: build, lintian, install/upgrade/purge in a clean Debian 12 root, units, lenses"
tests/package/run.sh

section "real libvirtd 11.x + QEMU end to end: file.so and lockmgrd as the packages install them"
# The files of the .debs built above, unpacked in their installed layout (not cargo's target/).
packaged=$(mktemp -d /tmp/lockmgr-packaged.XXXXXX)
trap 'rm -rf "$packaged"' EXIT
for deb in target/debian/lockmgr_*_amd64.deb target/debian/libvirt-daemon-plugin-lockmgr-file_*_amd64.deb; do
    [ -f "$deb" ] || { echo "run-all: no package $deb: the package stage must build it" >&2; exit 1; }
    dpkg-deb -x "$deb" "$packaged"
done
tests/e2e/run.sh --plugin file --plugin-dir "$packaged/usr/lib/x86_64-linux-gnu/libvirt/lock-driver" \
    --lockmgrd "$packaged/usr/sbin/lockmgrd"

section "real libvirtd 11.x + QEMU end to end: libvirt's lockd.so (reference)"
tests/e2e/run.sh --plugin lockd

section "libdlm bindings on a real DLM cluster (QEMU nodes)"
tests/cluster/run-proof.sh

section "dlm.so and lockmgrd --backend dlm on real DLM clusters (2 and 3 nodes; power fencing, watchdog self-fencing, no fencing as the control)"
tests/cluster/run-dlm.sh

section "dlm.so under real libvirtd 11.x on both nodes of a DLM cluster, installed from the packages above: virsh scenarios, live migration, node crash, nop control"
tests/cluster/run-virsh.sh

section "conformance matrix with a dlm column (owners on two nodes) and dlm.so vs raw libdlm"
tests/cluster/run-dlm-matrix.sh

section "nemesis: faults at random under a write workload on a shared disk (power fencing, watchdog fencing: 0 violations; off: > 0)"
tests/cluster/run-nemesis.sh

section "done in $(( $(date +%s) - started ))s"
