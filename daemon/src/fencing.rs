//! The DLM is only as safe as the cluster's fencing: with `enable_fencing=0` the survivors take a
//! cut-off node's locks as soon as corosync drops it, while that node's domains may still write
//! (measured on the test bed: two live writers of one disk for 7–19 s on 3 nodes, without end on
//! 2). So `lockmgrd --backend dlm` asks dlm_controld how it runs and refuses to start without
//! fencing.

use std::collections::HashMap;
use std::process::Command;

/// The options `dlm_tool dump_config` prints, one `name=value` a line, the value maybe followed
/// by where it was set (`enable_fencing=1 (dlm.conf)`).
fn parse_config(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter_map(|line| line.trim().split_once('='))
        .map(|(key, value)| {
            let value = value.split_whitespace().next().unwrap_or_default();
            (key.trim(), value)
        })
        .collect()
}

/// Checks dlm_controld's running configuration (`dlm_tool dump_config`): fencing must be on.
/// Returns a line for the log.
pub fn check_config(dump_config: &str) -> Result<String, String> {
    let config = parse_config(dump_config);
    match config.get("enable_fencing") {
        Some(&"1") => {}
        Some(value) => {
            return Err(format!(
                "dlm_controld runs with enable_fencing={value}: when a node is cut off or \
                 frozen, the other nodes take its locks while its domains may still write to \
                 the disks. Turn fencing on (enable_fencing=1 and a fence_all or device line in \
                 /etc/dlm/dlm.conf, see dlm.conf(5) and docs/dlm.md), then restart dlm_controld"
            ));
        }
        None => {
            return Err(format!(
                "cannot tell whether dlm_controld fences failed nodes: `dlm_tool dump_config` \
                 printed no enable_fencing ({} line(s))",
                dump_config.lines().count()
            ));
        }
    }
    let quorum_fencing = config.get("enable_quorum_fencing").copied();
    Ok(format!(
        "dlm_controld fences failed nodes (enable_fencing=1, enable_quorum_fencing={})",
        quorum_fencing.unwrap_or("?")
    ))
}

/// Asks the running dlm_controld (`dlm_tool dump_config`) and checks it.
pub fn check_running_cluster() -> Result<String, String> {
    let output = Command::new("dlm_tool")
        .arg("dump_config")
        .output()
        .map_err(|e| {
            format!("cannot run `dlm_tool dump_config` to check that the cluster fences: {e}")
        })?;
    if !output.status.success() {
        return Err(format!(
            "`dlm_tool dump_config` failed ({}): {}; is dlm_controld running?",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    check_config(&String::from_utf8_lossy(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As dlm_tool 4.2 prints it: a value set in dlm.conf or on the command line says so.
    const FENCED: &str = "daemon_debug=0\nforeground=0\nlog_debug=1 (dlm.conf)\n\
        post_join_delay=5 (dlm.conf)\nenable_fencing=1 (dlm.conf)\nenable_concurrent_fencing=0\n\
        enable_startup_fencing=0 (dlm.conf)\nenable_quorum_fencing=1\nenable_quorum_lockspace=1\n";

    #[test]
    fn a_fencing_cluster_is_accepted() {
        let said = check_config(FENCED).unwrap();
        assert!(said.contains("enable_quorum_fencing=1"), "{said}");
    }

    #[test]
    fn a_cluster_without_fencing_is_refused_with_the_way_out() {
        let unfenced = FENCED.replace(
            "enable_fencing=1 (dlm.conf)",
            "enable_fencing=0 (cli option)",
        );
        let why = check_config(&unfenced).unwrap_err();
        assert!(
            why.starts_with("dlm_controld runs with enable_fencing=0")
                && why.contains("/etc/dlm/dlm.conf"),
            "{why}"
        );
        let unknown = check_config("daemon_debug=0\n").unwrap_err();
        assert!(unknown.contains("printed no enable_fencing"), "{unknown}");
    }
}
