#!/usr/bin/env bash
# The part of tests/main-job.sh that runs inside its private mount namespace: refuses to run
# anywhere else, because it mounts a tmpfs on /run.
# Usage (by main-job.sh only): unshare --mount --propagation private bash main-job-inside.sh TARGET SCRATCH
set -euo pipefail
target=$1
scratch=$2
loader=$target/lockmgr-loader-test

# A private mount namespace has a mount-namespace inode different from PID 1's.
if [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
    echo "main-job-inside.sh: not in a private mount namespace; refusing to mount over /run" >&2
    exit 2
fi
mount -t tmpfs tmpfs /run
mkdir -p /run/libvirt /run/lockmgr

virtlockd --daemon --pid-file /run/virtlockd.pid
"$target/lockmgrd" --config "$scratch/qemu-file.conf" --pid-file /run/lockmgr/file.pid \
    2>"$scratch/lockmgrd.log" &
stop() {
    for pidfile in /run/lockmgr/file.pid /run/virtlockd.pid; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    return 0
}
trap stop EXIT
for _ in $(seq 200); do
    [ -S /run/libvirt/virtlockd-sock ] && [ -s /run/lockmgr/file.pid ] && break
    sleep 0.05
done
[ -s /run/lockmgr/file.pid ] || { echo "lockmgrd did not start:" >&2; cat "$scratch/lockmgrd.log" >&2; exit 1; }

rc=0
# validate's exit status: 0 every step passed, 1 some step failed, 3 nothing failed but some step
# needs a daemon that is not running ("incomplete"). Only sanlock.so is expected to be incomplete
# here; nop.so and lockd.so (whose virtlockd runs above) must pass, so they run on their own and
# anything but 0 fails the job.
echo
echo "=== validate: nop.so, lockd.so (against virtlockd) ==="
"$loader" validate "$scratch/nop.so" lockd || rc=1
echo
echo "=== validate: sanlock.so (no sanlock daemon: incomplete, exit 3; the matrix below runs it against one) ==="
"$loader" validate sanlock || {
    code=$?
    if [ "$code" != 3 ]; then
        echo "main-job: validate sanlock.so exited $code, expected 3 (incomplete: needs its daemon)" >&2
        rc=1
    fi
}
echo
echo "=== validate: file.so (against lockmgrd) ==="
"$loader" validate "$scratch/file.so" --config "$scratch/qemu-file.conf" || rc=1

echo
echo "=== conformance matrix: nop.so, file.so, lockd.so, sanlock.so ==="
# nop is expected to fail the exclusion scenarios, lockd two of them and sanlock three (see the
# footnotes), so the table's own exit status is 1 ("some ✗"); any other status (2 usage, 3 some
# cell cannot run here) fails the job. file.so's column is checked on its own below, no cell of
# any column may be "cannot run here", and sanlock's must have run for real (a real sanlock
# daemon, without a watchdog).
"$loader" matrix --plugin "$target/libnop.so" --plugin "$target/libfile.so" --plugin lockd \
    --plugin sanlock --json-file "$scratch/matrix.json" || {
    code=$?
    if [ "$code" != 1 ]; then
        echo "main-job: the matrix exited $code, expected 1 (some expected ✗)" >&2
        rc=1
    fi
}
python3 - "$scratch/matrix.json" <<'CHECK' || rc=1
import json, sys
report = json.load(open(sys.argv[1]))
cannot = [c for c in report["cells"] if c["verdict"] == "cannot-run"]
if cannot:
    print("main-job: cells that could not run here:",
          json.dumps(cannot, indent=1), file=sys.stderr)
    sys.exit(1)
cells = [c for c in report["cells"] if c["plugin"] == "sanlock"]
ran = [c for c in cells if c["verdict"] in ("pass", "fail") and c["steps"]]
if not cells or len(ran) != len(cells):
    print("main-job: the sanlock column did not run for real:",
          json.dumps([c for c in cells if c not in ran], indent=1), file=sys.stderr)
    sys.exit(1)
print(f"main-job: sanlock.so ran all {len(cells)} scenarios against a real sanlock daemon "
      f"({sum(c['verdict'] == 'pass' for c in cells)} ✓)")
CHECK
# file.so is expected to pass: exit 0 (every cell ✓ or –), and the cells say so.
"$loader" matrix --plugin "$target/libfile.so" --json >"$scratch/file-matrix.json" || {
    echo "main-job: the file.so matrix exited $?, expected 0" >&2
    rc=1
}
python3 - "$scratch/file-matrix.json" <<'CHECK' || rc=1
import json, sys
cells = json.load(open(sys.argv[1]))["cells"]
bad = [c for c in cells if c["verdict"] not in ("pass", "not-applicable")]
if not cells or bad:
    print("main-job: file.so failed:", json.dumps(bad, indent=1), file=sys.stderr)
    sys.exit(1)
passed = sum(c["verdict"] == "pass" for c in cells)
# A "not applicable" cell is counted as such, never as passed.
print(f"main-job: file.so passed {passed} of {len(cells)} scenarios"
      f" ({len(cells) - passed} not applicable)")
CHECK
exit $rc
