# shellcheck shell=bash
# Sourced by tests/e2e/run.sh: the evidence checks the cases are built from. A refusal only
# counts if it comes from the lock manager; starts, refusals and destroys are checked, and the
# domain states a case needs are set up. Each sets REASON when it fails.
# Uses run.sh's globals: PLUGIN, QEMU_LOCK_TEXT, ALL_DOMS, T.
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
