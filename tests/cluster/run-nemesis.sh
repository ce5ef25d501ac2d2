#!/usr/bin/env bash
# The nemesis (tests/cluster/tests/nemesis.rs): 3 nodes share one raw disk; workers on every node
# contend for a few exclusive disks through dlm.so + lockmgrd and write the shared disk only while
# they hold the lock, while the nemesis partitions, kills, freezes nodes, kills lockmgrd and
# restarts corosync. A checker reads the disk image afterwards.
#
# - default (CI; 12.5 min measured on the loaded 2-core machine before the watchdog run, about
#   half of it node boots): every fault kind once with power fencing (0 violations required),
#   then every fault kind once with watchdog self-fencing (lockmgrd --watchdog; 0 violations and
#   the expected watchdog resets required; it fails loudly when lockmgrd has no --watchdog), then
#   a control cluster without fencing and two partitions (violations required);
# - --watchdog: the watchdog run only;
# - --soak [--duration SECS] (default 3600): the power-fenced run only, faults at random for SECS after
#   the first round, bigger regions; the target is >= 10^5 lock operations.
#
# Needs root, /dev/net/tun and qemu-system-x86; builds what it needs, leaves nothing behind.
# Honours CARGO_TARGET_DIR. NEMESIS_REPORT=FILE appends each run's summary to FILE.
#
# Usage: tests/cluster/run-nemesis.sh [--watchdog | --soak [--duration SECS]]
set -euo pipefail

# shellcheck source=tests/cluster/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

soak=0
watchdog_only=0
duration=3600
while [ $# -gt 0 ]; do
    case $1 in
        --soak) soak=1 ;;
        --watchdog) watchdog_only=1 ;;
        --duration) shift; [ $# -gt 0 ] || fail "--duration needs seconds"; duration=$1 ;;
        --duration=*) duration=${1#--duration=} ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) fail "unknown argument $1 (--soak, --duration SECS, --watchdog)" ;;
    esac
    shift
done
case $duration in ''|*[!0-9]*) fail "--duration takes whole seconds, not '$duration'" ;; esac
preflight

cargo test -p lockmgr-testbed --test nemesis --no-run
run() { cargo test -p lockmgr-testbed --test nemesis -- --ignored --nocapture --test-threads=1 --exact "$1"; }
if [ "$watchdog_only" = 1 ]; then
    run nemesis_with_watchdog_fencing
elif [ "$soak" = 1 ]; then
    # About 75 records a second across the disks: size the regions for the duration.
    mib=$(( (duration * 40 * 512 >> 20) + 16 ))
    NEMESIS_SECONDS=$duration NEMESIS_REGION_MIB=$mib run nemesis_with_fencing
else
    NEMESIS_SECONDS=${NEMESIS_SECONDS:-0} run nemesis_with_fencing
    NEMESIS_SECONDS=0 run nemesis_with_watchdog_fencing
    run nemesis_control_without_fencing
fi
echo "[run-nemesis] total $(( $(date +%s) - start )) s"

leftover=$(left_behind)
[ -z "$leftover" ] || fail "network namespaces left behind: $leftover"
