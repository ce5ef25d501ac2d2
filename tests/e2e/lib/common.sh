# shellcheck shell=bash
# Sourced by tests/e2e/run.sh (outside and inside the namespace): logging, time and the bounded
# wait; and, for the namespace part, virsh, domain state and the registry of started processes.
# Uses run.sh's globals: T, REASON, HOST_NETNS, HOST_CGROUP.
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

# --- virsh and the processes of the run (inside the namespace) -------------------------------
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
