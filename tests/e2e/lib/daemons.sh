# shellcheck shell=bash
# Sourced by tests/e2e/run.sh: starting and stopping the daemons inside the namespace (libvirtd,
# lockmgrd, virtlockd, virtlogd). Used by the set-up, by the restart cases and by the teardown.
# Uses run.sh's globals: T, PLUGIN, REASON, SYSTEM_CONNECTION_DRIVER_DIR.
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
