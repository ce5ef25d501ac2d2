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
echo
echo "=== validate: nop.so, lockd.so (against virtlockd), sanlock.so (no sanlock daemon: incomplete; the matrix below runs it against one) ==="
"$loader" validate "$scratch/nop.so" lockd sanlock || { code=$?; [ "$code" = 3 ] || rc=1; }
echo
echo "=== validate: file.so (against lockmgrd) ==="
"$loader" validate "$scratch/file.so" --config "$scratch/qemu-file.conf" || rc=1

echo
echo "=== conformance matrix: nop.so, file.so, lockd.so, sanlock.so ==="
# nop is expected to fail the exclusion scenarios, lockd two of them and sanlock three (see the
# footnotes), so the table's own exit status says "some ✗"; file.so's column is checked on its
# own below, and sanlock's must have run for real (a real sanlock daemon, without a watchdog).
"$loader" matrix --plugin "$target/libnop.so" --plugin "$target/libfile.so" --plugin lockd \
    --plugin sanlock --json-file "$scratch/matrix.json" || true
python3 - "$scratch/matrix.json" <<'CHECK' || rc=1
import json, sys
report = json.load(open(sys.argv[1]))
cells = [c for c in report["cells"] if c["plugin"] == "sanlock"]
ran = [c for c in cells if c["verdict"] in ("pass", "fail") and c["steps"]]
if not cells or len(ran) != len(cells):
    print("main-job: the sanlock column did not run for real:",
          json.dumps([c for c in cells if c not in ran], indent=1), file=sys.stderr)
    sys.exit(1)
print(f"main-job: sanlock.so ran all {len(cells)} scenarios against a real sanlock daemon "
      f"({sum(c['verdict'] == 'pass' for c in cells)} ✓)")
CHECK
"$loader" matrix --plugin "$target/libfile.so" --json >"$scratch/file-matrix.json" || true
python3 - "$scratch/file-matrix.json" <<'CHECK' || rc=1
import json, sys
cells = json.load(open(sys.argv[1]))["cells"]
bad = [c for c in cells if c["verdict"] not in ("pass", "not-applicable")]
if not cells or bad:
    print("main-job: file.so failed:", json.dumps(bad, indent=1), file=sys.stderr)
    sys.exit(1)
print(f"main-job: file.so passed all {len(cells)} scenarios")
CHECK
exit $rc
