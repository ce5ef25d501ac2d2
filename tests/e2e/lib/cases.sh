# shellcheck shell=bash
# Sourced by tests/e2e/run.sh: the cases (case_NAME for case NAME, run in inner_main's order) and
# run_case, which runs one and records PASS/FAIL/SKIP in $T/results. A case returns 0 (pass),
# 3 (skip, REASON says why) or anything else (fail, REASON says why).
# Uses run.sh's globals: T, PLUGIN, DA DB DC DD, ALL_DOMS, DISK_LOCKS, REASON, CURRENT_CASE.
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
