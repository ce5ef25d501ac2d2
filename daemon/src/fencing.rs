//! The DLM is only as safe as the cluster's fencing: with `enable_fencing=0` the survivors take a
//! cut-off node's locks as soon as corosync drops it, while that node's domains may still write
//! (measured on the test bed: two live writers of one disk for 7–19 s on 3 nodes, without end on
//! 2). So `lockmgrd --backend dlm` asks dlm_controld how it runs and refuses to start without
//! fencing.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use lockmgr_quorum::QuorumInfo;

use crate::watchdog::FENCE_MARGIN_SECS;

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

/// The fence agent of clusters that fence with watchdogs ([`crate::watchdog`]).
pub const WATCHDOG_AGENT: &str = "fence_lockmgr_watchdog";
/// Where dlm_controld reads its configuration.
pub const DLM_CONF: &str = "/etc/dlm/dlm.conf";

/// A line of dlm.conf that names a fence agent: `fence_all AGENT [key=val ...]` or
/// `device NAME AGENT [key=val ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceLine {
    /// 1-based, for messages.
    pub line: usize,
    pub agent: String,
    pub args: Vec<(String, String)>,
}

impl FenceLine {
    fn is_watchdog_agent(&self) -> bool {
        Path::new(&self.agent).file_name() == Some(std::ffi::OsStr::new(WATCHDOG_AGENT))
    }

    fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The fence agents configured in dlm.conf's text.
pub fn fence_lines(dlm_conf: &str) -> Vec<FenceLine> {
    let mut lines = Vec::new();
    for (index, text) in dlm_conf.lines().enumerate() {
        let mut words = text.split_whitespace();
        let agent = match words.next() {
            Some("fence_all") => words.next(),
            Some("device") => words.nth(1),
            _ => None,
        };
        if let Some(agent) = agent {
            let args = words
                .filter_map(|word| word.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            lines.push(FenceLine {
                line: index + 1,
                agent: agent.to_owned(),
                args,
            });
        }
    }
    lines
}

/// What the daemon's self-fencing is set to.
#[derive(Debug, Clone, Copy)]
pub struct SelfFenceSettings {
    /// `--watchdog`'s timeout, when a watchdog is armed.
    pub watchdog_timeout: Option<u64>,
    pub lock_failure_timeout: u64,
}

/// Checks that the cluster's fencing and this daemon's self-fencing fit together: a cluster
/// whose survivors trust `fence_lockmgr_watchdog` needs every node's lockmgrd to arm its
/// watchdog, and the agent must wait out the watchdog and the lock-failure timeout. Returns
/// whether the cluster relies on the watchdog agent, and a line for the log.
pub fn check_self_fencing(
    dlm_conf_path: &Path,
    dlm_conf: &str,
    settings: SelfFenceSettings,
) -> Result<(bool, String), String> {
    let lines = fence_lines(dlm_conf);
    let at = |line: &FenceLine| format!("{} line {}", dlm_conf_path.display(), line.line);
    let Some(agent) = lines.iter().find(|line| line.is_watchdog_agent()) else {
        let said = match settings.watchdog_timeout {
            Some(timeout) => format!(
                "fence agents in {}: {}; the watchdog ({timeout} s) adds self-fencing",
                dlm_conf_path.display(),
                describe_agents(&lines)
            ),
            None => format!(
                "fence agents in {}: {}",
                dlm_conf_path.display(),
                describe_agents(&lines)
            ),
        };
        return Ok((false, said));
    };
    let Some(watchdog_timeout) = settings.watchdog_timeout else {
        return Err(format!(
            "{} fences with {WATCHDOG_AGENT}: the other nodes take a failed node's disks once \
             it has waited, trusting that node's watchdog, but this lockmgrd runs without \
             --watchdog. Start it with --watchdog /dev/watchdog (see docs/dlm.md)",
            at(agent)
        ));
    };
    let needed = watchdog_timeout + settings.lock_failure_timeout + FENCE_MARGIN_SECS;
    let wait = agent.arg("wait").and_then(|w| w.parse::<u64>().ok());
    match wait {
        Some(wait) if wait >= needed => Ok((
            true,
            format!(
                "self-fencing: survivors wait {wait} s ({}) before taking this node's disks; \
                 watchdog {watchdog_timeout} s + lock-failure timeout {} s + {FENCE_MARGIN_SECS} s = {needed} s",
                at(agent),
                settings.lock_failure_timeout
            ),
        )),
        Some(wait) => Err(format!(
            "{}: {WATCHDOG_AGENT} wait={wait} is shorter than this node's watchdog timeout \
             ({watchdog_timeout} s) + lock-failure timeout ({} s) + {FENCE_MARGIN_SECS} s = \
             {needed} s: the other nodes could take the disks of a node that still writes. \
             Set wait={needed} or more on every node, or shorten the timeouts",
            at(agent),
            settings.lock_failure_timeout
        )),
        None => Err(format!(
            "{}: {WATCHDOG_AGENT} has no wait=SECONDS (at least {needed})",
            at(agent)
        )),
    }
}

/// Watchdog fencing needs a partition that can tell it lost: in a two_node cluster both halves
/// stay quorate, so a cut-off node would keep petting while the other takes its disks. A quorum
/// device breaks the tie.
pub fn check_quorum_for_watchdog(info: &QuorumInfo) -> Result<(), String> {
    if info.two_node && !info.qdevice_registered {
        return Err(format!(
            "corosync runs with two_node: 1 and no quorum device (node {}, {} expected votes): \
             after a split both nodes stay quorate, and with watchdog fencing each would take \
             the other's disks while its own domains still write. Add a quorum device \
             (corosync-qdevice), a third node, or use power fencing",
            info.node_id, info.expected_votes
        ));
    }
    Ok(())
}

fn describe_agents(lines: &[FenceLine]) -> String {
    if lines.is_empty() {
        return "none (dlm_controld's command line may name them)".into();
    }
    lines
        .iter()
        .map(|line| line.agent.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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

    const WATCHDOG_CONF: &str =
        "enable_fencing=1\n# survivors wait\nfence_all /usr/sbin/fence_lockmgr_watchdog wait=20\n";

    fn settings(watchdog: Option<u64>) -> SelfFenceSettings {
        SelfFenceSettings {
            watchdog_timeout: watchdog,
            lock_failure_timeout: 8,
        }
    }

    #[test]
    fn fence_lines_name_agents_and_args() {
        let lines = fence_lines(
            "fence_all /usr/sbin/fence_x a=1\ndevice ipmi fence_ipmilan ip=10.0.0.1 x\nlog_debug=1\n",
        );
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].line, lines[0].agent.as_str()),
            (1, "/usr/sbin/fence_x")
        );
        assert_eq!(lines[1].agent, "fence_ipmilan");
        assert_eq!(lines[1].arg("ip"), Some("10.0.0.1"));
    }

    #[test]
    fn the_watchdog_agent_needs_an_armed_watchdog_and_a_long_enough_wait() {
        let path = Path::new("/etc/dlm/dlm.conf");
        let (relies, said) = check_self_fencing(path, WATCHDOG_CONF, settings(Some(10))).unwrap();
        assert!(relies && said.contains("= 20 s"), "{said}");
        let why = check_self_fencing(path, WATCHDOG_CONF, settings(None)).unwrap_err();
        assert!(
            why.contains("/etc/dlm/dlm.conf line 3") && why.contains("without --watchdog"),
            "{why}"
        );
        let why = check_self_fencing(path, WATCHDOG_CONF, settings(Some(11))).unwrap_err();
        assert!(
            why.contains("wait=20 is shorter") && why.contains("wait=21"),
            "{why}"
        );
        let no_wait = WATCHDOG_CONF.replace(" wait=20", "");
        let why = check_self_fencing(path, &no_wait, settings(Some(10))).unwrap_err();
        assert!(why.contains("no wait=SECONDS"), "{why}");
    }

    #[test]
    fn two_nodes_without_a_quorum_device_cannot_fence_by_watchdog() {
        let mut info = QuorumInfo {
            node_id: 1,
            quorate: true,
            two_node: true,
            qdevice_registered: false,
            expected_votes: 2,
            total_votes: 1,
            quorum: 1,
        };
        let why = check_quorum_for_watchdog(&info).unwrap_err();
        assert!(why.contains("two_node: 1 and no quorum device"), "{why}");
        info.qdevice_registered = true;
        assert_eq!(check_quorum_for_watchdog(&info), Ok(()));
        info.two_node = false;
        info.qdevice_registered = false;
        assert_eq!(check_quorum_for_watchdog(&info), Ok(()));
    }

    #[test]
    fn power_fencing_needs_no_watchdog() {
        let path = Path::new("/etc/dlm/dlm.conf");
        let power = "fence_all /usr/sbin/fence_testbed\n";
        let (relies, said) = check_self_fencing(path, power, settings(None)).unwrap();
        assert!(!relies && said.contains("fence_testbed"), "{said}");
        let (relies, said) = check_self_fencing(path, power, settings(Some(10))).unwrap();
        assert!(!relies && said.contains("adds self-fencing"), "{said}");
    }
}
