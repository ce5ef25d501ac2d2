//! The starts lockmgrd must refuse: an inconsistent lock table, an unfenced cluster and unsafe
//! self-fencing.

use crate::bed::Bed;
use crate::{PID_FILE, SHARE};

pub(crate) fn inconsistent_table_refused(bed: &Bed) -> Result<String, String> {
    let script = r#"mkdir -p /run/lockmgr/bad-state && printf '%s\n' 'socket_path = "/run/lockmgr/bad.sock"' 'state_dir = "/run/lockmgr/bad-state"' > /run/lockmgr/bad.conf
printf '%s' '{"format":2,"backend":"dlm","owners":[],"locks":[{"spec":{"kind":"disk","name":"/vm/x.img","mode":"exclusive"},"mode":"exclusive","holders":["00000000-0000-4000-8000-000000000001"]}],"unsettled":[]}' > /run/lockmgr/bad-state/locks.json"#;
    bed.sh(1, script);
    let (code, out) = bed.sh(
        1,
        &format!("timeout 20 {SHARE}/lockmgrd --backend dlm --config /run/lockmgr/bad.conf 2>&1"),
    );
    if code == 0 || !out.contains("which is not in the owner list") {
        return Err(format!("exit {code}:\n{out}"));
    }
    Ok("refused to start".into())
}

pub(crate) fn unfenced_cluster_refused(bed: &Bed) -> Result<String, String> {
    // A stand-in dlm_tool reporting what `dlm_controld --enable_fencing 0` reports.
    let script = r#"mkdir -p /run/lockmgr/unfenced-bin && printf '%s\n' '#!/bin/sh' 'echo enable_fencing=0' > /run/lockmgr/unfenced-bin/dlm_tool && chmod +x /run/lockmgr/unfenced-bin/dlm_tool
printf '%s\n' 'socket_path = "/run/lockmgr/unfenced.sock"' 'state_dir = "/run/lockmgr/unfenced-state"' > /run/lockmgr/unfenced.conf"#;
    bed.sh(1, script);
    let (code, out) = bed.sh(
        1,
        &format!(
            "PATH=/run/lockmgr/unfenced-bin:$PATH timeout 20 {SHARE}/lockmgrd --backend dlm --config /run/lockmgr/unfenced.conf 2>&1"
        ),
    );
    if code == 0 || !out.contains("dlm_controld runs with enable_fencing=0") {
        return Err(format!("exit {code}:\n{out}"));
    }
    Ok("refused to start".into())
}

/// Self-fencing that cannot be safe is refused at start, by the real corosync of this two_node
/// cluster: survivors that trust fence_lockmgr_watchdog while the daemon arms no watchdog, a
/// wait= shorter than the timeouts, watchdog fencing with two_node and no quorum device, and a
/// missing watchdog device. The serving daemon is untouched.
pub(crate) fn unsafe_self_fencing_refused(bed: &Bed) -> Result<String, String> {
    let setup = r#"mkdir -p /run/lockmgr && printf '%s\n' 'socket_path = "/run/lockmgr/wd.sock"' 'state_dir = "/run/lockmgr/wd-state"' > /run/lockmgr/wd.conf
printf '%s\n' 'enable_fencing=1' 'fence_all /usr/sbin/fence_lockmgr_watchdog wait=20' > /run/lockmgr/dlm-wd.conf
printf '%s\n' 'enable_fencing=1' 'fence_all /usr/sbin/fence_lockmgr_watchdog wait=15' > /run/lockmgr/dlm-short.conf"#;
    bed.sh(1, setup);
    let daemon = format!(
        "timeout 20 {SHARE}/lockmgrd --backend dlm --config /run/lockmgr/wd.conf --lock-failure-timeout 8"
    );
    let cases = [
        (
            "--dlm-conf /run/lockmgr/dlm-wd.conf",
            "runs without --watchdog",
        ),
        (
            "--dlm-conf /run/lockmgr/dlm-short.conf --watchdog /dev/watchdog --watchdog-timeout 10",
            "wait=15 is shorter than",
        ),
        (
            "--dlm-conf /run/lockmgr/dlm-wd.conf --watchdog /dev/watchdog --watchdog-timeout 10",
            "two_node: 1 and no quorum device",
        ),
        // Power fencing (the bed's dlm.conf) plus a watchdog this node does not have.
        (
            "--watchdog /dev/nowatchdog --watchdog-timeout 10",
            "cannot open the watchdog /dev/nowatchdog",
        ),
    ];
    let mut seen = Vec::new();
    for (args, expected) in cases {
        let (code, out) = bed.sh(1, &format!("{daemon} {args} 2>&1"));
        if code == 0 || !out.contains(expected) {
            return Err(format!(
                "lockmgrd {args}: exit {code}, expected '{expected}':\n{out}"
            ));
        }
        seen.push(expected);
    }
    if bed.sh(1, &format!("kill -0 $(cat {PID_FILE})")).0 != 0 {
        return Err("the serving lockmgrd on node1 is gone".into());
    }
    Ok(format!("refused: {}", seen.join("; ")))
}
