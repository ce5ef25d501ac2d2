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

log() { printf 'e2e: %s\n' "$*"; }
die() { printf 'e2e: error: %s\n' "$*" >&2; exit 2; }
now_us() { local t=${EPOCHREALTIME/./}; printf '%s' "$((10#$t))"; }
secs_since() { # START_US -> "1.234"
    local d=$(($(now_us) - $1))
    printf '%d.%03d' $((d / 1000000)) $((d % 1000000 / 1000))
}
indent() { sed 's/^/      /'; }

# Bounded wait: wait_for SECONDS DESCRIPTION CMD... ; polls CMD every 0.1 s until it succeeds.
# CMD returning 2 means "will never succeed" (it sets REASON): stop waiting at once.
wait_for() {
    local secs=$1 what=$2 rc
    shift 2
    local deadline=$(($(now_us) + secs * 1000000))
    while :; do
        rc=0
        "$@" || rc=$?
        [ $rc != 0 ] || return 0
        [ $rc != 2 ] || return 1
        if (($(now_us) >= deadline)); then
            REASON="timed out after ${secs}s waiting for $what"
            return 1
        fi
        sleep 0.1
    done
}

# =============================================================================================
# Inside the namespace
# =============================================================================================

vsh() { timeout 60 virsh -c qemu:///system "$@"; }

# virsh_run VAR CMD... : runs virsh; its exit status goes to VAR_RC, its stdout+stderr to VAR.
virsh_run() {
    local __var=$1
    shift
    local __out __rc=0
    __out=$(vsh "$@" 2>&1) || __rc=$?
    printf -v "$__var" '%s' "$__out"
    printf -v "${__var}_RC" '%s' "$__rc"
}

domstate() { vsh domstate "$1" 2>/dev/null | head -n1 || true; }
state_is() { [ "$(domstate "$1")" = "$2" ]; }
qemu_pid() { cat "/run/libvirt/qemu/$1.pid" 2>/dev/null || true; }

# Registers a process of ours so that teardown and the outer script can check it is gone.
register_pid() { # KIND PID MATCH   (MATCH: text /proc/PID/cmdline must contain)
    printf '%s %s %s\n' "$1" "$2" "$3" >>"$T/pids"
    # nothing of ours may get a network namespace or a cgroup of its own (cgroup_controllers = [ ])
    local ns cg
    ns=$(readlink "/proc/$2/ns/net" 2>/dev/null) || return 0
    cg=$(cat "/proc/$2/cgroup" 2>/dev/null) || return 0
    [ "$ns" = "$HOST_NETNS" ] || echo "$1 $2 is in network namespace $ns, not $HOST_NETNS" >>"$T/isolation"
    [ "$cg" = "$HOST_CGROUP" ] || echo "$1 $2 is in cgroups $(tr '\n' ' ' <<<"$cg")" >>"$T/isolation"
    if [ "$1" = qemu ]; then # daemonised by libvirt, so adopted by this subreaper shell
        local stat ppid
        read -r stat <"/proc/$2/stat" || return 0
        read -r _ ppid _ <<<"${stat##*) }"
        [ "$ppid" = "$$" ] || echo "qemu $2's parent is $ppid, not the test's shell $$ (no subreaper?)" >>"$T/isolation"
    fi
}
pid_matches() { # PID MATCH
    [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# --- the evidence checks ---------------------------------------------------------------------

# Is TEXT a refusal by the lock manager (and not QEMU's own image lock)?  Sets REASON if not.
is_plugin_refusal() { # TEXT HOLDER
    local text=$1 holder=$2
    if grep -qE -- "$QEMU_LOCK_TEXT" <<<"$text"; then
        REASON="refused by QEMU's own image lock, not by the plugin: $(tr '\n' ' ' <<<"$text")"
        return 1
    fi
    if ! grep -q 'resource busy' <<<"$text"; then
        REASON="refusal does not come from the lock manager (no 'resource busy'): $(tr '\n' ' ' <<<"$text")"
        return 1
    fi
    if [ "$PLUGIN" = file ] && ! grep -qF -- "by domain '$holder'" <<<"$text"; then
        REASON="file.so's refusal does not name the holder (expected \"by domain '$holder'\"): $(tr '\n' ' ' <<<"$text")"
        return 1
    fi
}

start_ok() { # DOM
    local t0
    t0=$(now_us)
    virsh_run OUT start "$1"
    echo "    virsh start $1 -> rc=$OUT_RC ($(secs_since "$t0") s)"
    if [ "$OUT_RC" != 0 ]; then
        printf '%s\n' "$OUT" | indent
        REASON="virsh start $1 failed: $(tr '\n' ' ' <<<"$OUT")"
        return 1
    fi
    state_is "$1" running || { REASON="$1 is '$(domstate "$1")' after a successful start"; return 1; }
    local pid
    pid=$(qemu_pid "$1")
    [ -n "$pid" ] || { REASON="no QEMU pid file /run/libvirt/qemu/$1.pid"; return 1; }
    register_pid qemu "$pid" "guest=$1,"
}

start_refused() { # DOM HOLDER
    local t0
    t0=$(now_us)
    virsh_run OUT start "$1"
    echo "    virsh start $1 -> rc=$OUT_RC ($(secs_since "$t0") s)"
    printf '%s\n' "$OUT" | indent
    if [ "$OUT_RC" = 0 ]; then
        REASON="$1 started although $2 holds the resource"
        return 1
    fi
    is_plugin_refusal "$OUT" "$2" || return 1
    state_is "$1" "shut off" || { REASON="$1 is '$(domstate "$1")' after a refused start"; return 1; }
}

destroy_ok() { # DOM
    virsh_run OUT destroy "$1"
    [ "$OUT_RC" = 0 ] || { REASON="virsh destroy $1 failed: $(tr '\n' ' ' <<<"$OUT")"; return 1; }
    wait_for 30 "$1 to be shut off after destroy" state_is "$1" "shut off"
}

# Leaves exactly the given domains running (others destroyed), starting what is missing.
ensure_only() {
    local d k keep
    for d in "${ALL_DOMS[@]}"; do
        keep=0
        for k in "$@"; do [ "$d" = "$k" ] && keep=1; done
        if [ $keep = 0 ] && ! state_is "$d" "shut off"; then
            destroy_ok "$d" || { REASON="precondition: $REASON"; return 1; }
        fi
    done
    for d in "$@"; do
        case "$(domstate "$d")" in
        running) ;;
        paused) { destroy_ok "$d" && start_ok "$d"; } || { REASON="precondition: $REASON"; return 1; } ;;
        *) start_ok "$d" || { REASON="precondition: $REASON"; return 1; } ;;
        esac
    done
}

lockstate_of() { grep -o '<lockstate>[^<]*</lockstate>' "/run/libvirt/qemu/$1.xml" 2>/dev/null || true; }
has_disk() { vsh domblklist "$1" 2>/dev/null | grep -qF -- "$2"; }
lacks_disk() { ! has_disk "$@"; }
gone() { ! kill -0 "$1" 2>/dev/null; }

# --- cases -----------------------------------------------------------------------------------

case_plugin_loaded() {
    local line
    line=$(grep -E "Module load $PLUGIN from " "$T/logs/libvirtd.log" | head -n1 || true)
    echo "    libvirtd.log: ${line#*: }"
    grep -q "virLockManagerPluginNew:.*name=$PLUGIN " "$T/logs/libvirtd.log" ||
        { REASON="libvirtd.log has no 'virLockManagerPluginNew: name=$PLUGIN' (nop used?)"; return 1; }
    grep -qF "Module load $PLUGIN from $T/plugins/$PLUGIN.so" "$T/logs/libvirtd.log" ||
        { REASON="libvirtd did not load $T/plugins/$PLUGIN.so (LIBVIRT_LOCK_MANAGER_PLUGIN_DIR ignored?)"; return 1; }
}

# (1) A holds the shared <lease>; B, on its own disk, is refused by the plugin.
case_lease_conflict() {
    ensure_only "$DA" || return 1
    start_refused "$DB" "$DA" || return 1
    state_is "$DA" running || { REASON="$DA is '$(domstate "$DA")' after $DB's refused start"; return 1; }
}

# (1b) A runs on a.img; a.img's inode is replaced; C on the same path is refused by the plugin
#      (QEMU's own lock is per inode and would let C through).
case_disk_inode_swap() {
    if [ "$DISK_LOCKS" = direct ]; then
        REASON="direct disk locks are on the image's inode (as lockd's direct mode): a new inode is a new lock"
        return 3
    fi
    ensure_only "$DA" || return 1
    local img="$T/images/a.img"
    cp --preserve=mode,ownership "$img" "$img.new" && mv -f "$img.new" "$img"
    echo "    replaced the inode of $img while $DA runs (now $(stat -c %i "$img"))"
    start_refused "$DC" "$DA" || return 1
}

# (2) kill -9 of A's QEMU frees its locks: B (same lease) then starts.
case_kill9_frees() {
    ensure_only "$DA" || return 1
    local pid
    pid=$(qemu_pid "$DA")
    pid_matches "$pid" "guest=$DA," || { REASON="pid '$pid' from /run/libvirt/qemu/$DA.pid is not $DA's QEMU"; return 1; }
    kill -9 "$pid"
    echo "    kill -9 $pid ($DA's QEMU)"
    wait_for 30 "$DA to be shut off after kill -9" state_is "$DA" "shut off" || return 1
    echo "    $DA: $(vsh domstate --reason "$DA" 2>&1 | head -n1)"
    start_ok "$DB" || return 1
}

# (3) suspend releases, resume re-acquires: while A is paused, B takes the lease; A's resume is
#     refused until B stops; then A resumes and holds the lease again.
case_suspend_resume() {
    ensure_only "$DA" || return 1
    virsh_run OUT suspend "$DA"
    [ "$OUT_RC" = 0 ] || { REASON="virsh suspend $DA failed: $OUT"; return 1; }
    state_is "$DA" paused || { REASON="$DA is '$(domstate "$DA")' after suspend"; return 1; }
    local ls
    ls=$(lockstate_of "$DA")
    echo "    $DA paused; /run/libvirt/qemu/$DA.xml: ${ls:-no <lockstate>}"
    if [ "$PLUGIN" = file ]; then
        grep -qE '^<lockstate>lockmgr1:[^:]*:[0-9a-f]{8}</lockstate>$' <<<"$ls" ||
            { REASON="no <lockstate>lockmgr1:<entries>:<checksum></lockstate> in $DA's status XML after suspend (file.so returns a state on pause)"; return 1; }
        if grep -q '^<lockstate>lockmgr1::' <<<"$ls"; then
            echo "    note: the saved state lists no resource: libvirt keeps the state of the last of its two pause Releases, and the second one found nothing held"
        fi
    elif [ -n "$ls" ]; then
        REASON="unexpected <lockstate> with lockd (it keeps no state): $ls"
        return 1
    fi
    start_ok "$DB" || { REASON="pause did not release: $REASON"; return 1; }
    local t0
    t0=$(now_us)
    virsh_run OUT resume "$DA"
    echo "    virsh resume $DA (while $DB holds the lease) -> rc=$OUT_RC ($(secs_since "$t0") s)"
    printf '%s\n' "$OUT" | indent
    [ "$OUT_RC" != 0 ] || { REASON="$DA resumed although $DB holds the lease"; return 1; }
    is_plugin_refusal "$OUT" "$DB" || return 1
    state_is "$DA" paused || { REASON="$DA is '$(domstate "$DA")' after a refused resume (expected paused)"; return 1; }
    if [ "$PLUGIN" = file ]; then
        [ "$(lockstate_of "$DA")" = "$ls" ] ||
            { REASON="<lockstate> changed by a refused resume: '$(lockstate_of "$DA")' (was '$ls')"; return 1; }
    fi
    destroy_ok "$DB" || return 1
    virsh_run OUT resume "$DA"
    echo "    virsh resume $DA (after $DB stopped) -> rc=$OUT_RC"
    [ "$OUT_RC" = 0 ] || { REASON="resume of $DA failed after $DB stopped: $(tr '\n' ' ' <<<"$OUT")"; return 1; }
    state_is "$DA" running || { REASON="$DA is '$(domstate "$DA")' after resume"; return 1; }
    ls=$(lockstate_of "$DA")
    [ -z "$ls" ] || { REASON="<lockstate> still in $DA's status XML after a successful resume: $ls"; return 1; }
    start_refused "$DB" "$DA" || { REASON="after resume, $DA does not hold the lease again: $REASON"; return 1; }
}

attach() { # DOM IMG
    local t0
    t0=$(now_us)
    virsh_run OUT attach-disk "$1" "$2" sdb --targetbus scsi --subdriver qcow2 --live
    echo "    virsh attach-disk $1 $(basename "$2") sdb -> rc=$OUT_RC ($(secs_since "$t0") s)"
}
detach() { # DOM
    virsh_run OUT detach-disk "$1" sdb --live
    echo "    virsh detach-disk $1 sdb -> rc=$OUT_RC"
    [ "$OUT_RC" = 0 ] || { REASON="detach-disk $1 sdb failed: $(tr '\n' ' ' <<<"$OUT")"; return 1; }
    wait_for 10 "sdb to leave $1" lacks_disk "$1" sdb
}

# (4) hotplug: D attaches h.qcow2; A's attach of it is refused by the plugin; D detaches (which
#     releases) and A's attach works; A detaches and D can attach again.
case_hotplug() {
    ensure_only "$DA" "$DD" || return 1
    local img="$T/images/h.qcow2"
    attach "$DD" "$img"
    [ "$OUT_RC" = 0 ] || { REASON="attach of free image to $DD failed: $(tr '\n' ' ' <<<"$OUT")"; return 1; }
    wait_for 10 "$img in $DD's domblklist after attach" has_disk "$DD" "$img" ||
        { REASON="$REASON; domblklist: $(vsh domblklist "$DD" 2>&1 | tr -s ' \n' ' ')"; return 1; }
    attach "$DA" "$img"
    printf '%s\n' "$OUT" | indent
    [ "$OUT_RC" != 0 ] || { REASON="$DA attached $img although $DD holds it"; return 1; }
    is_plugin_refusal "$OUT" "$DD" || return 1
    ! has_disk "$DA" "$img" || { REASON="$img is in $DA's domblklist after a refused attach"; return 1; }
    detach "$DD" || return 1
    attach "$DA" "$img"
    [ "$OUT_RC" = 0 ] || { REASON="attach to $DA after $DD's detach failed (detach did not release?): $(tr '\n' ' ' <<<"$OUT")"; return 1; }
    detach "$DA" || return 1
    attach "$DD" "$img"
    [ "$OUT_RC" = 0 ] || { REASON="attach to $DD after $DA's detach failed (detach did not release?): $(tr '\n' ' ' <<<"$OUT")"; return 1; }
    detach "$DD" || return 1
}

libvirtd_running() { [ -s "$T/pids.d/libvirtd.pid" ] && kill -0 "$(cat "$T/pids.d/libvirtd.pid")" 2>/dev/null; }
# libvirtd.log's errors, without those every start on these machines logs (no DMI, no cgroups)
libvirtd_errors() { # LAST-N
    grep ' error : ' "$T/logs/libvirtd.log" 2>/dev/null |
        grep -vE 'udevGetDMIData|dmidecode|virCgroupDetectControllers' | tail -n "$1" | sed 's/^.* error : //'
}
libvirtd_ready() { timeout 10 virsh -c qemu:///system version >/dev/null 2>&1; }
libvirtd_up() {
    libvirtd_ready && return 0
    libvirtd_running && return 1
    REASON="libvirtd exited during start: $(tail -n 3 "$T/logs/libvirtd.stderr" | tr '\n' ' ') $(libvirtd_errors 3 | tr '\n' ' ')"
    return 2
}

start_libvirtd() {
    # not --daemon: in the foreground (of a subshell, in its own session) its stderr is kept,
    # which is where it says why it could not start (e.g. a plugin that does not load)
    rm -f "$T/pids.d/libvirtd.pid" "$T/pids.d/libvirtd.own.pid"
    (
        LIBVIRT_LOCK_MANAGER_PLUGIN_DIR="$T/plugins" LIBVIRT_DRIVER_DIR="$T/drivers" \
            setsid libvirtd -f "$T/conf/libvirtd.conf" -p "$T/pids.d/libvirtd.own.pid" \
            </dev/null >>"$T/logs/libvirtd.stderr" 2>&1 &
        echo $! >"$T/pids.d/libvirtd.pid"
    )
    register_pid libvirtd "$(cat "$T/pids.d/libvirtd.pid")" libvirtd
    wait_for 120 "libvirtd to answer 'virsh version'" libvirtd_up || return 1
}

stop_pidfile() { # NAME PIDFILE SECONDS: TERM, bounded wait, then KILL
    local pid t0 dumped=0
    pid=$(cat "$2" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    t0=$(now_us)
    while kill -0 "$pid" 2>/dev/null; do
        if [ $dumped = 0 ] && (($(now_us) - t0 > 5000000)); then
            # slow stop: keep what its threads wait on, for the report
            dumped=1
            local t threads=""
            for t in /proc/"$pid"/task/*; do
                threads+=" $(cat "$t/comm" 2>/dev/null)($(cat "$t/wchan" 2>/dev/null))"
            done
            echo "    note: $1 ($pid) still running 5 s after SIGTERM; its threads:$threads"
        fi
        if (($(now_us) - t0 > $3 * 1000000)); then
            REASON="$1 ($pid) did not exit within $3 s of SIGTERM; killed"
            echo "e2e: $REASON" >&2
            kill -KILL "$pid" 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
}

# (5) libvirtd restart keeps A's locks: A still runs (same QEMU) and B is still refused.
case_libvirtd_restart() {
    ensure_only "$DA" || return 1
    local pid t0
    pid=$(qemu_pid "$DA")
    t0=$(now_us)
    stop_pidfile libvirtd "$T/pids.d/libvirtd.pid" 60 || return 1
    echo "    libvirtd stopped (SIGTERM) in $(secs_since "$t0") s"
    t0=$(now_us)
    start_libvirtd || return 1
    echo "    libvirtd restarted, ready in $(secs_since "$t0") s"
    state_is "$DA" running || { REASON="$DA is '$(domstate "$DA")' after the libvirtd restart"; return 1; }
    [ "$(qemu_pid "$DA")" = "$pid" ] || { REASON="$DA's QEMU pid changed across the restart ($pid -> $(qemu_pid "$DA"))"; return 1; }
    start_refused "$DB" "$DA" || return 1
}

# (6) destroy releases (here after the libvirtd restart: A's lock is still tied to its QEMU).
case_destroy_releases() {
    ensure_only "$DA" || return 1
    destroy_ok "$DA" || return 1
    echo "    virsh destroy $DA -> $(domstate "$DA")"
    start_ok "$DB" || return 1
}

post_exec_count() { grep -c 'Running post-restart exec' "$T/logs/virtlockd.log" 2>/dev/null || true; }
post_exec_after() { [ "$(post_exec_count)" -gt "$1" ]; }
lock_daemon_pidfile() { if [ "$PLUGIN" = file ]; then echo "$T/pids.d/lockmgrd.pid"; else echo "$T/pids.d/virtlockd.pid"; fi; }

# (7) the lock daemon restarts while A runs: A keeps its locks (B refused), and the daemon still
#     frees them when A stops. file: kill -9 lockmgrd + start again (lock table in state_dir);
#     lockd: SIGUSR1 (virtlockd re-execs itself keeping its state; a real restart drops all locks).
case_lock_daemon_restart() {
    ensure_only "$DA" || return 1
    local pid t0 qpid
    qpid=$(qemu_pid "$DA")
    pid=$(cat "$(lock_daemon_pidfile)")
    t0=$(now_us)
    if [ "$PLUGIN" = file ]; then
        pid_matches "$pid" lockmgrd || { REASON="pid '$pid' is not lockmgrd"; return 1; }
        kill -KILL "$pid"
        wait_for 10 "lockmgrd ($pid) to die" gone "$pid" || return 1
        echo "    kill -9 lockmgrd ($pid)"
        start_lockmgrd || return 1
        echo "    lockmgrd restarted as $(cat "$T/pids.d/lockmgrd.pid"), ready in $(secs_since "$t0") s"
        echo "    lockmgrd: $(grep -o 'restored .*' "$T/logs/lockmgrd.log" | tail -n1)"
    else
        # re-exec keeps the pid and carries the listening socket and the lock state over
        local before
        before=$(post_exec_count)
        kill -USR1 "$pid"
        wait_for 10 "virtlockd to log 'Running post-restart exec' after SIGUSR1" post_exec_after "$before" ||
            return 1
        wait_for 10 "virtlockd to accept connections" sock_ready /run/libvirt/virtlockd-sock || return 1
        kill -0 "$pid" 2>/dev/null || { REASON="virtlockd ($pid) gone after SIGUSR1"; return 1; }
        echo "    virtlockd re-exec'd (SIGUSR1), ready in $(secs_since "$t0") s"
    fi
    state_is "$DA" running || { REASON="$DA is '$(domstate "$DA")' after the lock daemon restart"; return 1; }
    [ "$(qemu_pid "$DA")" = "$qpid" ] || { REASON="$DA's QEMU changed across the lock daemon restart"; return 1; }
    start_refused "$DB" "$DA" || { REASON="after the lock daemon restart: $REASON"; return 1; }
    destroy_ok "$DA" || return 1
    echo "    virsh destroy $DA -> $(domstate "$DA")"
    start_ok "$DB" || { REASON="after the lock daemon restart, $DA's destroy did not free its locks: $REASON"; return 1; }
}

# (3b) a corrupted <lockstate> is refused at resume with a clear error, and A stays paused.
#      The state is edited in A's status XML while libvirtd is down, as libvirt reads it at start.
case_corrupt_lockstate() {
    if [ "$PLUGIN" != file ]; then
        REASON="lockd keeps no lock state (its Release returns none), so there is nothing to corrupt"
        return 3
    fi
    ensure_only "$DA" || return 1
    virsh_run OUT suspend "$DA"
    [ "$OUT_RC" = 0 ] || { REASON="virsh suspend $DA failed: $OUT"; return 1; }
    local ls bad xml="/run/libvirt/qemu/$DA.xml"
    ls=$(lockstate_of "$DA")
    [ -n "$ls" ] || { REASON="no <lockstate> in $xml after suspend"; return 1; }
    bad=$(sed -E 's/:[0-9a-f]{8}</:deadbeef</' <<<"$ls")
    [ "$bad" != "$ls" ] || bad=$(sed -E 's/:[0-9a-f]{8}</:00000000</' <<<"$ls")
    stop_pidfile libvirtd "$T/pids.d/libvirtd.pid" 60 || return 1
    sed -i "s|$ls|$bad|" "$xml"
    start_libvirtd || return 1
    echo "    with libvirtd down, $xml: $ls -> $bad"
    virsh_run OUT resume "$DA"
    echo "    virsh resume $DA -> rc=$OUT_RC"
    printf '%s\n' "$OUT" | indent
    [ "$OUT_RC" != 0 ] || { REASON="$DA resumed with a corrupted lock state $bad"; return 1; }
    grep -q 'not a valid lockmgr state' <<<"$OUT" ||
        { REASON="refusal does not say the state is invalid: $(tr '\n' ' ' <<<"$OUT")"; return 1; }
    state_is "$DA" paused || { REASON="$DA is '$(domstate "$DA")' after the refused resume (expected paused)"; return 1; }
    destroy_ok "$DA" || return 1
    # libvirt keeps a domain's saved lock state across destroy and hands it to the next start's
    # Acquire; it only forgets it when libvirtd restarts (the inactive domain object is new then)
    virsh_run OUT start "$DA"
    if [ "$OUT_RC" = 0 ]; then
        register_pid qemu "$(qemu_pid "$DA")" "guest=$DA,"
        echo "    virsh start $DA after destroy -> rc=0"
        destroy_ok "$DA" || return 1
    else
        echo "    note: virsh start $DA after destroy -> rc=$OUT_RC: libvirt passed the stale state again:"
        printf '%s\n' "$OUT" | indent
        stop_pidfile libvirtd "$T/pids.d/libvirtd.pid" 60 || return 1
        start_libvirtd || return 1
        start_ok "$DA" || { REASON="$DA cannot start even after a libvirtd restart: $REASON"; return 1; }
        echo "    after a libvirtd restart, $DA starts again"
        destroy_ok "$DA" || return 1
    fi
}

run_case() { # NAME FUNCTION
    local name=$1 fn=$2 t0 dt
    REASON=""
    CURRENT_CASE=$name
    echo "--- $name"
    t0=$(now_us)
    local rc=0
    "$fn" || rc=$?
    if [ $rc = 0 ]; then
        dt=$(secs_since "$t0")
        echo "PASS $name ($dt s)"
        echo "PASS $name ($dt s)" >>"$T/results"
    elif [ $rc = 3 ]; then
        echo "SKIP $name: $REASON"
        echo "SKIP $name: $REASON" >>"$T/results"
    else
        dt=$(secs_since "$t0")
        echo "FAIL $name: ${REASON:-unknown} ($dt s)"
        echo "FAIL $name: ${REASON:-unknown} ($dt s)" >>"$T/results"
        # do not let one failure cascade into the next cases
        local d
        for d in "${ALL_DOMS[@]}"; do state_is "$d" "shut off" || vsh destroy "$d" >/dev/null 2>&1 || true; done
    fi
    CURRENT_CASE=""
}

# --- setup -----------------------------------------------------------------------------------

sock_ready() { perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Peer => $ARGV[0]) or exit 1' "$1" 2>/dev/null; }

lockmgrd_up() { # PID
    sock_ready /run/lockmgr/file.sock && return 0
    kill -0 "$1" 2>/dev/null && return 1
    REASON="lockmgrd ($1) exited at start; its stderr: $(tail -n 5 "$T/logs/lockmgrd.log" | tr '\n' ' ')"
    return 2
}

start_lockmgrd() {
    rm -f "$T/pids.d/lockmgrd.pid"
    # own session: a Ctrl-C on the terminal must not stop it before teardown does
    # in a subshell: lockmgrd is then adopted by this (subreaper) shell but is not one of its jobs,
    # so killing it in a case makes no "Killed" job notice
    (
        setsid "$T/bin/lockmgrd" --config /etc/libvirt/qemu-file.conf --pid-file "$T/pids.d/lockmgrd.pid" \
            </dev/null >>"$T/logs/lockmgrd.log" 2>&1 &
        echo $! >"$T/pids.d/lockmgrd.started"
    )
    local pid
    pid=$(cat "$T/pids.d/lockmgrd.started")
    register_pid lockmgrd "$pid" lockmgrd
    wait_for 15 "lockmgrd to accept connections on /run/lockmgr/file.sock" lockmgrd_up "$pid" || return 1
    [ -s "$T/pids.d/lockmgrd.pid" ] || echo "$pid" >"$T/pids.d/lockmgrd.pid"
    [ "$(cat "$T/pids.d/lockmgrd.pid")" = "$pid" ] ||
        { REASON="lockmgrd's pid file says $(cat "$T/pids.d/lockmgrd.pid"), started $pid"; return 1; }
}

# Mirrors the directory skeleton (owners, modes) of SRC into DST, without any file.
mirror_dirs() { # SRC DST DEPTH
    local m u g p
    while read -r m u g p; do
        install -d -m "$m" -o "$u" -g "$g" "$2/$p"
    done < <(cd "$1" && find . -maxdepth "$3" -type d -printf '%m %u %g %p\n')
}

setup_namespace() {
    local R="$T/root"
    mkdir -p "$R/run" "$R/etc-libvirt" "$R/var-lib-libvirt" "$R/var-log-libvirt" "$R/var-cache-libvirt"
    chmod 0755 "$R" "$R/run"
    # /run first (virtlockd's socket path is fixed under /run/libvirt; the host has no such dir)
    mount -n --bind "$R/run" /run
    # a scratch copy of /etc/libvirt, without other guests' definitions, autostart links and hooks
    cp -a /etc/libvirt/. "$R/etc-libvirt/"
    find "$R/etc-libvirt" -depth \( -name autostart -o -name hooks \) -exec rm -rf {} +
    find "$R/etc-libvirt/qemu" -maxdepth 1 -name '*.xml' -delete 2>/dev/null || true
    mount -n --bind "$R/etc-libvirt" /etc/libvirt
    mirror_dirs /var/lib/libvirt "$R/var-lib-libvirt" 2
    mount -n --bind "$R/var-lib-libvirt" /var/lib/libvirt
    mirror_dirs /var/log/libvirt "$R/var-log-libvirt" 1
    mount -n --bind "$R/var-log-libvirt" /var/log/libvirt
    if [ -d /var/cache/libvirt ]; then cp -a /var/cache/libvirt/. "$R/var-cache-libvirt/"; fi
    if [ -d "$CAPS_CACHE" ]; then
        mkdir -p "$R/var-cache-libvirt/qemu/capabilities"
        cp -a "$CAPS_CACHE/." "$R/var-cache-libvirt/qemu/capabilities/"
    fi
    mount -n --bind "$R/var-cache-libvirt" /var/cache/libvirt
    # prove the isolation before anything runs: each system path is now our scratch directory
    local pair
    for pair in run:/run etc-libvirt:/etc/libvirt var-lib-libvirt:/var/lib/libvirt \
        var-log-libvirt:/var/log/libvirt var-cache-libvirt:/var/cache/libvirt; do
        [ "${pair#*:}" -ef "$R/${pair%%:*}" ] || { REASON="${pair#*:} is not $R/${pair%%:*} after the bind mount"; return 1; }
    done
}

write_configs() {
    mkdir -p "$T/conf" "$T/logs" "$T/pids.d" "$T/images" "$T/lockspace" "$T/xml" "$T/lockmgrd-state"
    cat >"$T/conf/virtlogd.conf" <<EOF
log_level = 3
log_outputs = "3:file:$T/logs/virtlogd.log"
EOF
    cat >"$T/conf/virtlockd.conf" <<EOF
log_filters = "1:locking 1:rpc.netserverclient 3:rpc 3:util 3:object 3:event"
log_outputs = "1:file:$T/logs/virtlockd.log"
EOF
    cat >"$T/conf/libvirtd.conf" <<EOF
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_rw_perms = "0700"
log_filters = "1:locking 1:qemu.qemu_process 1:qemu.qemu_domain 1:qemu.qemu_driver 1:qemu.qemu_hotplug 1:security 3:util 3:rpc 3:object 3:event 3:conf 3:cpu 3:capabilities"
log_outputs = "1:file:$T/logs/libvirtd.log"
EOF
    # the scratch qemu.conf: the system one with our lock manager and no cgroups
    sed -i -E 's/^[[:space:]]*(lock_manager|cgroup_controllers)[[:space:]]*=/# (lockmgr e2e) &/' /etc/libvirt/qemu.conf
    printf '\n# lockmgr e2e\nlock_manager = "%s"\ncgroup_controllers = [ ]\n' "$PLUGIN" >>/etc/libvirt/qemu.conf
    if [ "$PLUGIN" = file ]; then
        cat >/etc/libvirt/qemu-file.conf <<EOF
auto_disk_leases = 1
socket_path = "/run/lockmgr/file.sock"
state_dir = "$T/lockmgrd-state"
EOF
        if [ "$DISK_LOCKS" = lockspace ]; then
            echo "file_lockspace_dir = \"$T/lockspace\"" >>/etc/libvirt/qemu-file.conf
        fi
    else
        cat >/etc/libvirt/qemu-lockd.conf <<EOF
auto_disk_leases = 1
require_lease_for_disks = 0
file_lockspace_dir = "$T/lockspace"
EOF
    fi
}

lease_xml() {
    # lockd: lockspace = <target path>/<lockspace> (must be file_lockspace_dir), resource = <key>,
    # the lease file must exist and the offset must be 0.
    cat <<EOF
    <lease>
      <lockspace>lockspace</lockspace>
      <key>e2e-lease</key>
      <target path='$T' offset='0'/>
    </lease>
EOF
}

domain_xml() { # NAME DISK LEASE(0/1)
    local uuid
    uuid=$(cat /proc/sys/kernel/random/uuid)
    cat <<EOF
<domain type='$VIRT_TYPE'>
  <name>$1</name>
  <uuid>$uuid</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
$(if [ "$3" = 1 ]; then lease_xml; fi)
    <controller type='usb' model='none'/>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

define_domains() {
    local i
    for i in a b d; do qemu-img create -q -f raw "$T/images/$i.img" 16M; done
    qemu-img create -q -f qcow2 "$T/images/h.qcow2" 16M
    : >"$T/lockspace/e2e-lease" # lockd needs the lease file to exist
    domain_xml "$DA" "$T/images/a.img" 1 >"$T/xml/$DA.xml" # A: a.img + the lease
    domain_xml "$DB" "$T/images/b.img" 1 >"$T/xml/$DB.xml" # B: b.img + the lease
    domain_xml "$DC" "$T/images/a.img" 0 >"$T/xml/$DC.xml" # C: A's disk path, no lease
    domain_xml "$DD" "$T/images/d.img" 0 >"$T/xml/$DD.xml" # D: own disk, hotplug target
    for i in "${ALL_DOMS[@]}"; do vsh define "$T/xml/$i.xml" >/dev/null; done
}

start_daemons() {
    # libvirtd loads its drivers from LIBVIRT_DRIVER_DIR: all of the system's but nodedev, whose
    # udev thread deadlocks libvirtd 11.3's SIGTERM shutdown now and then (daemon-shutdown joins
    # udev-event while that waits for the mutex; libvirtd gives up after 30 s); QEMU guests without
    # host devices do not use it.
    mkdir -p "$T/drivers"
    local so
    for so in "$SYSTEM_CONNECTION_DRIVER_DIR"/libvirt_driver_*.so; do
        [ "${so##*/}" = libvirt_driver_nodedev.so ] || ln -sf "$so" "$T/drivers/"
    done
    [ -e "$T/drivers/libvirt_driver_qemu.so" ] || { REASON="no $SYSTEM_CONNECTION_DRIVER_DIR/libvirt_driver_qemu.so"; return 1; }
    virtlogd --daemon -f "$T/conf/virtlogd.conf" -p "$T/pids.d/virtlogd.pid"
    wait_for 5 "virtlogd's pid file" test -s "$T/pids.d/virtlogd.pid"
    register_pid virtlogd "$(cat "$T/pids.d/virtlogd.pid")" virtlogd
    if [ "$PLUGIN" = lockd ]; then
        virtlockd --daemon -f "$T/conf/virtlockd.conf" -p "$T/pids.d/virtlockd.pid"
        wait_for 5 "virtlockd's pid file" test -s "$T/pids.d/virtlockd.pid"
        register_pid virtlockd "$(cat "$T/pids.d/virtlockd.pid")" virtlockd
        wait_for 10 "virtlockd to accept connections" sock_ready /run/libvirt/virtlockd-sock
    else
        start_lockmgrd
    fi
    local t0
    t0=$(now_us)
    start_libvirtd
    echo "e2e: libvirtd ready in $(secs_since "$t0") s"
}

on_inner_signal() {
    if [ -n "${CURRENT_CASE:-}" ]; then
        echo "FAIL $CURRENT_CASE: interrupted by a signal"
        echo "FAIL $CURRENT_CASE: interrupted by a signal" >>"$T/results"
    fi
    exit 143
}

inner_teardown() {
    local rc=$?
    set +eE
    trap - ERR INT TERM HUP
    echo "--- teardown"
    local d pid f
    if libvirtd_running; then
        for d in "${ALL_DOMS[@]}"; do state_is "$d" "shut off" || vsh destroy "$d" >/dev/null 2>&1; done
        for d in "${ALL_DOMS[@]}"; do vsh undefine "$d" >/dev/null 2>&1; done
    fi
    stop_pidfile libvirtd "$T/pids.d/libvirtd.pid" 60
    # QEMUs that libvirtd did not stop (it was dead or hung): by pid file, checked by cmdline
    for f in /run/libvirt/qemu/*.pid; do
        [ -e "$f" ] || continue
        d=$(basename "$f" .pid)
        pid=$(cat "$f")
        if pid_matches "$pid" "guest=$d,"; then
            echo "e2e: killing left-over QEMU $pid of $d" >&2
            kill -KILL "$pid"
            wait_for 10 "QEMU $pid to die" gone "$pid" || echo "e2e: $REASON" >&2
        fi
    done
    stop_pidfile lockmgrd "$T/pids.d/lockmgrd.pid" 15
    stop_pidfile virtlockd "$T/pids.d/virtlockd.pid" 15
    stop_pidfile virtlogd "$T/pids.d/virtlogd.pid" 15
    wait 2>/dev/null # reap any background job of ours
    # keep the probed QEMU capabilities for the next run (scratch copy -> target dir)
    if [ -n "$(ls -A /var/cache/libvirt/qemu/capabilities 2>/dev/null)" ]; then
        mkdir -p "$CAPS_CACHE" && cp -a /var/cache/libvirt/qemu/capabilities/. "$CAPS_CACHE/"
    fi
    exit "$rc"
}

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
    trap 'echo "e2e: setup failed (run.sh line $LINENO: $BASH_COMMAND)${REASON:+: $REASON}" >&2' ERR
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
