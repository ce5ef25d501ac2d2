#!/usr/bin/env bash
# Real libvirt end to end: drives a lock-manager plugin through real libvirtd 11.x and QEMU with
# tiny no-OS domains, inside a private mount namespace, and checks afterwards that nothing was
# left behind.  See docs/e2e.md.
#
# Usage: tests/e2e/run.sh [--plugin file|lockd] [--keep] [--plugin-dir DIR] [--lockmgrd PATH]
#                         [--virt-type kvm|qemu] [--disk-locks lockspace|direct]
#   --plugin file   (default) lockmgr's file.so + lockmgrd, built with cargo unless the two
#                   paths below are given
#   --plugin lockd  libvirt's own lockd.so + virtlockd: the reference run
#   --plugin-dir    directory holding file.so (or libfile.so) instead of building it
#   --lockmgrd      lockmgrd binary instead of building it
#   --keep          keep the scratch directory (logs, XML, images) for debugging
#   --virt-type     domain type; default kvm when /dev/kvm is usable, else qemu (TCG)
#   --disk-locks    lockspace (default): disks locked as <file_lockspace_dir>/<sha256 of path>;
#                   direct: file.so locks the image files themselves (file.so's default config)
# Needs root. Prints one PASS/FAIL/SKIP line per case and ends with `e2e: N passed, M failed`.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SELF="$HERE/run.sh"
# subreaper CMD...: exec CMD as a child subreaper (prctl(PR_SET_CHILD_SUBREAPER, 1) survives
# execve). libvirt daemonises QEMU and its daemons; a subreaper reaps them at once (PID 1 on these
# machines reaps orphans only every ~2 s, which slows every destroy), and anything the test leaves
# behind shows up as its direct child. perl-base is Essential on Debian; 157 = prctl on x86_64.
subreaper() {
    exec perl -e 'syscall(157, 36, 1, 0, 0, 0) == 0 or die "prctl(PR_SET_CHILD_SUBREAPER): $!\n";
        exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!\n"' -- "$@"
}
SYSTEM_LOCK_DRIVER_DIR=/usr/lib/x86_64-linux-gnu/libvirt/lock-driver
SYSTEM_CONNECTION_DRIVER_DIR=/usr/lib/x86_64-linux-gnu/libvirt/connection-driver
QEMU_LOCK_TEXT='Failed to get "write" lock|Failed to get shared "write" lock|Is another process using the image'

# The parts, sourced from this script's own directory, so the same in the outer run and in the
# inner one (`bash "$SELF" --inner`, re-executed inside the namespace):
#   lib/common.sh    logging, timing, wait_for; virsh helpers, register_pid
#   lib/evidence.sh  what counts as a plugin refusal; start_ok/start_refused/destroy_ok/ensure_only
#   lib/daemons.sh   start/stop libvirtd, lockmgrd, virtlockd, virtlogd (start_daemons, stop_pidfile)
#   lib/cases.sh     the case_* functions and run_case
#   lib/setup.sh     bind mounts, scratch configs, domain XML; the inner teardown and signal trap
# This file: the options, the build, the host snapshots, the re-execs and the final checks.
# shellcheck source=tests/e2e/lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=tests/e2e/lib/evidence.sh
. "$HERE/lib/evidence.sh"
# shellcheck source=tests/e2e/lib/daemons.sh
. "$HERE/lib/daemons.sh"
# shellcheck source=tests/e2e/lib/cases.sh
. "$HERE/lib/cases.sh"
# shellcheck source=tests/e2e/lib/setup.sh
. "$HERE/lib/setup.sh"

# =============================================================================================
# Inside the namespace: set up (lib/setup.sh, lib/daemons.sh), run the cases (lib/cases.sh)
# =============================================================================================

inner_main() {
    T=$1
    PLUGIN="" VIRT_TYPE="" RUN="" CAPS_CACHE="" DISK_LOCKS="" HOST_NETNS="" HOST_CGROUP="" # $T/config
    # shellcheck source=/dev/null
    . "$T/config"
    DA="lmgr-e2e-$RUN-a" DB="lmgr-e2e-$RUN-b" DC="lmgr-e2e-$RUN-c" DD="lmgr-e2e-$RUN-d"
    ALL_DOMS=("$DA" "$DB" "$DC" "$DD")
    REASON=""
    HOST_NETNS=$(readlink /proc/self/ns/net)
    HOST_CGROUP=$(cat /proc/self/cgroup)
    trap inner_teardown EXIT
    trap 'on_inner_signal' INT TERM HUP
    trap 'echo "e2e: setup failed (${BASH_SOURCE[0]#"$HERE/"} line $LINENO: $BASH_COMMAND)${REASON:+: $REASON}" >&2' ERR
    setup_namespace
    write_configs
    start_daemons
    define_domains
    echo "e2e: domains: A=$DA B=$DB (lease), C=$DC (A's disk path), D=$DD (hotplug); type $VIRT_TYPE"
    trap - ERR
    set +e
    local c
    for c in plugin-loaded lease-conflict disk-inode-swap kill9-frees suspend-resume \
        corrupt-lockstate hotplug libvirtd-restart destroy-releases lock-daemon-restart; do
        # LOCKMGR_E2E_ONLY="case case...": run only these (debugging)
        if [ -n "${LOCKMGR_E2E_ONLY:-}" ] && ! grep -qw -- "$c" <<<"$LOCKMGR_E2E_ONLY"; then continue; fi
        run_case "$c" "case_${c//-/_}"
    done
    ensure_only >/dev/null
    exit 0
}

# =============================================================================================
# Outside: build, snapshot the host, run the namespace part, verify nothing was left behind
# =============================================================================================

host_snapshot() {
    echo "## qemu.conf"
    sha256sum /etc/libvirt/qemu.conf
    echo "## /etc/libvirt"
    find /etc/libvirt -printf '%y %m %u %g %p -> %l\n' | sort
    find /etc/libvirt -type f -exec sha256sum {} + | sort -k2
    # (/run is shared with other engineers' tests on this machine: only what this run would name)
    echo "## /run entries of this run"
    find /run -maxdepth 4 -name "*lmgr-e2e-$1*" 2>/dev/null | sort
    local d
    for d in /run/libvirt/qemu /var/lib/lockmgr /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
        echo "## $d"
        if [ -e "$d" ]; then find "$d" -printf '%y %m %u %g %p\n' | sort; else echo "absent"; fi
    done
    echo "## libvirt-made network interfaces"
    ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^(vnet|virbr|macvtap|macvlan)' || true
    echo "## libvirt machine cgroups"
    find /sys/fs/cgroup -maxdepth 3 -type d \( -name 'machine' -o -name 'machine.slice' -o -name 'machine-qemu*' \) 2>/dev/null | sort
}

outer_usage() { sed -n '6,18p' "$SELF" | sed 's/^# \{0,1\}//'; }

outer_main() {
    local plugin=file keep=0 plugin_dir="" lockmgrd="" virt_type="" disk_locks=lockspace args=("$@")
    while [ $# -gt 0 ]; do
        case "$1" in
        --plugin) plugin=${2:?--plugin needs file or lockd}; shift 2 ;;
        --plugin=*) plugin=${1#*=}; shift ;;
        --keep) keep=1; shift ;;
        --plugin-dir) plugin_dir=${2:?}; shift 2 ;;
        --lockmgrd) lockmgrd=${2:?}; shift 2 ;;
        --virt-type) virt_type=${2:?}; shift 2 ;;
        --disk-locks) disk_locks=${2:?}; shift 2 ;;
        -h | --help) outer_usage; exit 0 ;;
        *) outer_usage >&2; die "unknown argument '$1'" ;;
        esac
    done
    case "$plugin" in file | lockd) ;; *) die "--plugin must be file or lockd, not '$plugin'" ;; esac
    case "$disk_locks" in lockspace | direct) ;; *) die "--disk-locks must be lockspace or direct" ;; esac
    [ "$plugin/$disk_locks" != lockd/direct ] ||
        die "--disk-locks direct is for file.so only (lockd's leases need file_lockspace_dir)"
    [ "$(id -u)" = 0 ] || die "must run as root (libvirtd, QEMU, mount namespace)"

    # be a child subreaper: everything we start that outlives its parent becomes our child
    if [ "${LOCKMGR_E2E_SUBREAPER:-}" != "$$" ]; then
        [ "$(uname -m)" = x86_64 ] || die "x86_64 only (libvirt's paths, the prctl syscall number)"
        export LOCKMGR_E2E_SUBREAPER=$$
        subreaper bash "$SELF" "${args[@]}"
    fi
    local t_all
    t_all=$(now_us)

    # what the test needs from the system
    local missing=0 c
    for c in libvirtd virsh virtlogd virtlockd qemu-system-x86_64 qemu-img unshare setsid timeout ip; do
        command -v "$c" >/dev/null || { log "missing: $c"; missing=1; }
    done
    [ -e "$SYSTEM_LOCK_DRIVER_DIR/lockd.so" ] || { log "missing: $SYSTEM_LOCK_DRIVER_DIR/lockd.so"; missing=1; }
    if [ $missing = 1 ]; then
        log "installing what is missing (.ci/install-deps.sh)"
        bash "$REPO/.ci/install-deps.sh"
    fi
    libvirtd --version | grep -qE ' 1[1-9]\.' || die "libvirtd 11.x needed, found: $(libvirtd --version)"

    if [ -z "$virt_type" ]; then
        if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && id -nG libvirt-qemu 2>/dev/null | grep -qw kvm; then
            virt_type=kvm
        else
            virt_type=qemu
        fi
    fi

    # the plugin under test
    local plugin_so daemon_bin=""
    if [ "$plugin" = file ]; then
        local td=${CARGO_TARGET_DIR:-$REPO/target}
        case "$td" in /*) ;; *) td="$REPO/$td" ;; esac
        if [ -z "$plugin_dir" ] || [ -z "$lockmgrd" ]; then
            log "building file.so and lockmgrd (cargo build --release, target $td)"
            (cd "$REPO" && cargo build --release -p lockmgr-plugin-file -p lockmgrd) ||
                die "cargo build of lockmgr-plugin-file / lockmgrd failed"
        fi
        if [ -n "$plugin_dir" ]; then
            plugin_so="$plugin_dir/file.so"
            [ -e "$plugin_so" ] || plugin_so="$plugin_dir/libfile.so"
        else
            plugin_so="$td/release/libfile.so"
        fi
        daemon_bin=${lockmgrd:-$td/release/lockmgrd}
        [ -x "$daemon_bin" ] || die "lockmgrd not found or not executable: $daemon_bin"
    else
        plugin_so=${plugin_dir:+$plugin_dir/lockd.so}
        plugin_so=${plugin_so:-$SYSTEM_LOCK_DRIVER_DIR/lockd.so}
    fi
    [ -f "$plugin_so" ] || die "plugin not found: $plugin_so"
    local caps_cache=${CARGO_TARGET_DIR:-$REPO/target}
    case "$caps_cache" in /*) ;; *) caps_cache="$REPO/$caps_cache" ;; esac
    caps_cache="$caps_cache/e2e/qemu-capabilities"

    T=$(mktemp -d "${TMPDIR:-/tmp}/lockmgr-e2e.XXXXXX")
    chmod 0755 "$T" # QEMU runs as libvirt-qemu and must reach the images
    mkdir -p "$T/plugins" "$T/bin"
    cp "$plugin_so" "$T/plugins/$plugin.so" # libvirt wants NAME.so, no lib prefix
    [ -z "$daemon_bin" ] || cp "$daemon_bin" "$T/bin/lockmgrd"
    : >"$T/results"
    : >"$T/pids"
    : >"$T/isolation"
    local run
    run=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
    cat >"$T/config" <<EOF
PLUGIN=$plugin
DISK_LOCKS=$disk_locks
VIRT_TYPE=$virt_type
RUN=$run
CAPS_CACHE=$caps_cache
EOF
    log "plugin $plugin ($plugin_so${daemon_bin:+, $daemon_bin}), disk locks: $disk_locks, domain type $virt_type, scratch $T, run $run"
    host_snapshot "$run" >"$T/host-before.txt"

    # the namespace part, as a child subreaper too (perl -> unshare -> bash: one process)
    local inner rc=0 interrupted=0
    (subreaper unshare --mount --propagation private -- bash "$SELF" --inner "$T") &
    inner=$!
    trap 'interrupted=1; kill -TERM "$inner" 2>/dev/null || true' INT TERM HUP
    # wait returns early (>128) when a trapped signal arrives: wait again, bounded
    local deadline=$(($(now_us) + 900 * 1000000))
    while kill -0 "$inner" 2>/dev/null; do
        wait "$inner" && rc=0 || rc=$?
        if (($(now_us) > deadline)); then
            log "the namespace part runs for more than 900 s: killing it"
            kill -KILL "$inner" 2>/dev/null || true
        fi
    done
    trap - INT TERM HUP
    [ $interrupted = 0 ] || log "interrupted"

    # --- after: nothing of ours alive, nothing on the host changed ---
    local results=() leftovers=() kind pid match line
    mapfile -t results <"$T/results"
    while read -r kind pid match; do
        [ -n "$pid" ] || continue
        if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$match"; then
            leftovers+=("$kind $pid ($match)")
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done <"$T/pids"
    local st rest
    for st in /proc/[0-9]*/stat; do # our children (orphans we adopted as subreaper)
        read -r line <"$st" 2>/dev/null || continue
        rest=${line##*) }
        read -r _ pid _ <<<"$rest"
        if [ "$pid" = "$$" ]; then
            pid=${st#/proc/}
            pid=${pid%/stat}
            leftovers+=("child $pid: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")")
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for st in /proc/[0-9]*/cmdline; do # QEMUs of this run, wherever they are
        if tr '\0' ' ' 2>/dev/null <"$st" | grep -qF -- "guest=lmgr-e2e-$run-"; then
            pid=${st#/proc/}
            pid=${pid%/cmdline}
            leftovers+=("qemu $pid: $(tr '\0' ' ' 2>/dev/null <"$st" | cut -c1-120)")
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    local nproc
    nproc=$(wc -l <"$T/pids")
    if [ -s "$T/isolation" ]; then
        results+=("FAIL isolation: $(head -n 3 "$T/isolation" | tr '\n' ';')")
    else
        results+=("PASS isolation (all $nproc processes of the run stayed in the host's network namespace and in the test's own cgroups; every QEMU was adopted by the test)")
    fi
    if [ ${#leftovers[@]} = 0 ]; then
        results+=("PASS no-process-left ($nproc registered processes gone, no child of the test left, no QEMU with guest=lmgr-e2e-$run-*)")
    else
        results+=("FAIL no-process-left: killed ${leftovers[*]}")
    fi
    host_snapshot "$run" >"$T/host-after.txt"
    if diff -u "$T/host-before.txt" "$T/host-after.txt" >"$T/host.diff"; then
        results+=("PASS host-unchanged (qemu.conf sha256 $(sha256sum /etc/libvirt/qemu.conf | cut -c1-16)… unchanged; /etc/libvirt, /run/libvirt/qemu, /var/{lib,log,cache}/libvirt, vnet/virbr links, machine cgroups as before)")
    else
        results+=("FAIL host-unchanged: $(grep -c '^[-+][^-+]' "$T/host.diff") lines differ, see below")
    fi
    if [ $rc = 0 ] && ! grep -q '^PASS\|^FAIL' "$T/results"; then
        results+=("FAIL no-cases: the namespace part ran no case")
    fi
    if [ $rc != 0 ]; then
        if [ $interrupted = 1 ] || [ $rc = 143 ]; then
            results+=("FAIL interrupted: the namespace part was stopped by a signal (status $rc); torn down")
        else
            results+=("FAIL namespace-part: exited with status $rc (a setup error; see above)")
        fi
    fi

    local passed=0 failed=0 skipped=0 r
    echo "=== results (plugin $plugin, $(secs_since "$t_all") s)"
    for r in "${results[@]}"; do
        echo "$r"
        case "$r" in PASS*) passed=$((passed + 1)) ;; FAIL*) failed=$((failed + 1)) ;; SKIP*) skipped=$((skipped + 1)) ;; esac
    done
    if [ $failed != 0 ]; then
        [ ! -s "$T/host.diff" ] || { echo "=== host changes"; head -n 40 "$T/host.diff"; }
        echo "=== libvirtd.log (locking, last 60 lines)"
        grep -E 'locking|lock_|Lock' "$T/logs/libvirtd.log" 2>/dev/null | tail -n 60 || true
        echo "=== libvirtd.log (errors, last 20 lines)"
        grep -E ' error : ' "$T/logs/libvirtd.log" 2>/dev/null | tail -n 20 || true
        if [ "$plugin" = file ]; then
            echo "=== lockmgrd stderr (last 60 lines)"
            tail -n 60 "$T/logs/lockmgrd.log" 2>/dev/null || true
        else
            echo "=== virtlockd.log (last 40 lines)"
            tail -n 40 "$T/logs/virtlockd.log" 2>/dev/null || true
        fi
        local q
        for q in "$T"/root/var-log-libvirt/qemu/*.log; do
            [ -e "$q" ] || continue
            echo "=== $(basename "$q") (last 8 lines)"
            tail -n 8 "$q"
        done
    fi
    if [ $keep = 1 ]; then
        log "scratch kept: $T"
    else
        rm -rf "$T"
    fi
    [ $skipped = 0 ] || log "$skipped skipped (not applicable to plugin $plugin / disk locks $disk_locks)"
    echo "e2e: $passed passed, $failed failed"
    [ $failed = 0 ]
}

if [ "${1:-}" = --inner ]; then
    inner_main "$2"
else
    outer_main "$@"
fi
