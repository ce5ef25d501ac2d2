# shellcheck shell=bash
# Sourced by tests/e2e/run.sh: the set-up and teardown of the namespace part (bind mounts over
# the system paths, scratch configs, the test domains, the EXIT/signal traps' handlers).
# Uses run.sh's globals: T, PLUGIN, DISK_LOCKS, VIRT_TYPE, CAPS_CACHE, DA DB DC DD, ALL_DOMS.
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
