//! `lockmgr doctor` on a node: ready or not, and what it finds.

use crate::bed::Bed;
use crate::{CONFIG, Check, SHARE};

/// `lockmgr doctor` on `node` (its qemu.conf and plugin directory stand-ins in /run/lockmgr):
/// ready or not as expected, and every `expected` text in its findings.
pub(crate) fn doctor_says(bed: &Bed, node: usize, ready: bool, expected: &[&str]) -> Check {
    bed.sh(
        node,
        "mkdir -p /run/lockmgr/plugins && ln -sf /mnt/host/libdlm_plugin.so /run/lockmgr/plugins/dlm.so \
         && printf 'lock_manager = \"dlm\"\\n' > /run/lockmgr/qemu.conf",
    );
    let out = bed
        .cluster
        .exec(
            node,
            &format!(
                "{SHARE}/lockmgr doctor --qemu-conf /run/lockmgr/qemu.conf \
                 --plugin-dir /run/lockmgr/plugins --config {CONFIG}"
            ),
        )
        .map_err(|e| e.to_string())?;
    let text = out.stdout_text() + &out.stderr_text();
    let said_ready = out.code() == Some(0);
    if said_ready != ready {
        return Err(format!(
            "lockmgr doctor on node{node} exited {:?}, expected {}:\n{text}",
            out.code(),
            if ready { "ready (0)" } else { "not ready (1)" }
        ));
    }
    if let Some(missing) = expected.iter().find(|e| !text.contains(*e)) {
        return Err(format!(
            "lockmgr doctor on node{node} does not say '{missing}':\n{text}"
        ));
    }
    println!("{text}");
    Ok(format!(
        "node{node}: {}",
        text.lines().last().unwrap_or_default()
    ))
}
