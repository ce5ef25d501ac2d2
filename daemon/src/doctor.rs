//! `lockmgr doctor`: checks a host for dlm.so, one finding per check, each naming the file or the
//! command that fixes it.

use std::path::{Path, PathBuf};

use lockmgr_conf::{DlmPluginSettings, QemuConf};
use lockmgr_proto::{Client, Reply, Request};
use lockmgr_quorum::QuorumInfo;
use serde::Serialize;

use crate::fencing;
use crate::process;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// As it should be.
    Ok,
    /// Works, but not as it should.
    Warning,
    /// dlm.so cannot protect the disks (or cannot run) until this is fixed.
    Error,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked (a short name).
    pub check: &'static str,
    pub severity: Severity,
    /// What was found.
    pub detail: String,
    /// How to fix it, naming the file or the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            severity: Severity::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn problem(
        check: &'static str,
        severity: Severity,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            severity,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Where the doctor looks (the defaults are where libvirt and the packages put things).
#[derive(Debug, Clone)]
pub struct Paths {
    pub qemu_conf: PathBuf,
    pub plugin_conf: PathBuf,
    pub dlm_conf: PathBuf,
    pub plugin_dir: PathBuf,
    pub watchdog: PathBuf,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            qemu_conf: QemuConf::PATH.into(),
            plugin_conf: DlmPluginSettings::PATH.into(),
            dlm_conf: fencing::DLM_CONF.into(),
            plugin_dir: "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver".into(),
            watchdog: "/dev/watchdog".into(),
        }
    }
}

/// What corosync's votequorum said about this node, or why it did not answer.
pub type QuorumAnswer = Result<QuorumInfo, String>;

/// Runs every check for dlm.so on this host.
pub fn check_dlm_host(paths: &Paths, quorum: QuorumAnswer) -> Vec<Finding> {
    let mut findings = vec![check_qemu_conf(&paths.qemu_conf)];
    findings.push(check_plugin_file(&paths.plugin_dir));
    let settings = check_plugin_conf(&paths.plugin_conf, &mut findings);
    let quorate = check_corosync(quorum.clone(), &mut findings);
    let quorum = quorum.ok();
    findings.push(if process::running_named("dlm_controld") {
        Finding::ok("dlm_controld", "running")
    } else {
        Finding::problem(
            "dlm_controld",
            Severity::Error,
            "dlm_controld is not running",
            "start it after corosync (`dlm_controld`, or `systemctl start dlm`)",
        )
    });
    findings.push(match fencing::check_running_cluster() {
        Ok(said) => Finding::ok("fencing", said),
        Err(why) => Finding::problem(
            "fencing",
            Severity::Error,
            why,
            format!(
                "enable_fencing=1 in {}, then restart dlm_controld",
                paths.dlm_conf.display()
            ),
        ),
    });
    let daemon = running_lockmgrd();
    check_fence_agents(paths, quorum, daemon.as_ref(), &mut findings);
    if let Some(settings) = settings {
        findings.push(check_daemon(
            &settings,
            &paths.plugin_conf,
            daemon.as_ref(),
            quorate,
        ));
    }
    findings
}

fn check_qemu_conf(path: &Path) -> Finding {
    let shown = path.display();
    match QemuConf::from_file(path) {
        Err(err) => Finding::problem(
            "qemu.conf",
            Severity::Error,
            err.to_string(),
            format!("correct {shown}; libvirtd refuses to start with it"),
        ),
        Ok((conf, warnings)) => {
            let misspelled = warnings.iter().map(ToString::to_string).collect::<Vec<_>>();
            match conf.effective_lock_manager() {
                "dlm" if misspelled.is_empty() => {
                    Finding::ok("qemu.conf", format!("lock_manager = \"dlm\" ({shown})"))
                }
                "dlm" => Finding::problem(
                    "qemu.conf",
                    Severity::Warning,
                    format!("lock_manager = \"dlm\", but {}", misspelled.join("; ")),
                    format!("remove the other spelling from {shown}"),
                ),
                other => Finding::problem(
                    "qemu.conf",
                    Severity::Error,
                    format!(
                        "libvirt uses the '{other}' lock manager{}",
                        if misspelled.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", misspelled.join("; "))
                        }
                    ),
                    format!(
                        "set lock_manager = \"dlm\" in {shown}, then restart libvirtd (or virtqemud)"
                    ),
                ),
            }
        }
    }
}

fn check_plugin_file(dir: &Path) -> Finding {
    let plugin = dir.join("dlm.so");
    if plugin.is_file() {
        Finding::ok("plugin", format!("{} is installed", plugin.display()))
    } else {
        Finding::problem(
            "plugin",
            Severity::Error,
            format!(
                "{} is missing: libvirt cannot load dlm.so",
                plugin.display()
            ),
            format!(
                "install the plugin package, or copy cargo's libdlm_plugin.so to {}",
                plugin.display()
            ),
        )
    }
}

fn check_plugin_conf(path: &Path, findings: &mut Vec<Finding>) -> Option<DlmPluginSettings> {
    match DlmPluginSettings::from_file(path) {
        Ok((settings, warnings)) => {
            findings.push(if warnings.is_empty() {
                Finding::ok(
                    "qemu-dlm.conf",
                    format!(
                        "lockspace '{}', socket {} ({})",
                        settings.lockspace_name,
                        settings.socket_path.display(),
                        path.display()
                    ),
                )
            } else {
                Finding::problem(
                    "qemu-dlm.conf",
                    Severity::Warning,
                    warnings
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                    format!("correct {}", path.display()),
                )
            });
            Some(settings)
        }
        Err(err) => {
            findings.push(Finding::problem(
                "qemu-dlm.conf",
                Severity::Error,
                err.to_string(),
                format!(
                    "correct {}; dlm.so and lockmgrd both refuse it",
                    path.display()
                ),
            ));
            None
        }
    }
}

fn check_corosync(quorum: QuorumAnswer, findings: &mut Vec<Finding>) -> bool {
    match quorum {
        Ok(info) if info.quorate => {
            findings.push(Finding::ok(
                "corosync",
                format!(
                    "node {}, quorate ({} of {} votes, {} needed)",
                    info.node_id, info.total_votes, info.expected_votes, info.quorum
                ),
            ));
            true
        }
        Ok(info) => {
            findings.push(Finding::problem(
                "corosync",
                Severity::Error,
                format!(
                    "node {} is NOT quorate ({} of {} votes, {} needed): its lockspace is stopped \
                     and it gets no lock",
                    info.node_id, info.total_votes, info.expected_votes, info.quorum
                ),
                "bring the other nodes back or reconnect this one; see `corosync-quorumtool -s` \
                 and `corosync-cfgtool -s`",
            ));
            false
        }
        Err(why) => {
            findings.push(Finding::problem(
                "corosync",
                Severity::Error,
                format!("corosync does not answer: {why}"),
                "start corosync (`corosync`, or `systemctl start corosync`); its configuration \
                 is /etc/corosync/corosync.conf",
            ));
            false
        }
    }
}

/// A running `lockmgrd --backend dlm`: its pid and command line.
#[derive(Debug, Clone)]
struct RunningDaemon {
    pid: u32,
    args: Vec<String>,
}

impl RunningDaemon {
    fn flag(&self, name: &str) -> Option<&str> {
        let with_equals = format!("{name}=");
        self.args.iter().enumerate().find_map(|(i, arg)| {
            if arg == name {
                self.args.get(i + 1).map(String::as_str)
            } else {
                arg.strip_prefix(&with_equals)
            }
        })
    }
}

fn running_lockmgrd() -> Option<RunningDaemon> {
    process::pids_named("lockmgrd").into_iter().find_map(|pid| {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let daemon = RunningDaemon { pid, args };
        (daemon.flag("--backend") == Some("dlm")).then_some(daemon)
    })
}

fn check_fence_agents(
    paths: &Paths,
    quorum: Option<QuorumInfo>,
    daemon: Option<&RunningDaemon>,
    findings: &mut Vec<Finding>,
) {
    let dlm_conf = std::fs::read_to_string(&paths.dlm_conf).unwrap_or_default();
    let agents = fencing::fence_lines(&dlm_conf);
    if agents.is_empty() {
        findings.push(Finding::problem(
            "fence method",
            Severity::Error,
            format!("{} names no fence agent", paths.dlm_conf.display()),
            format!(
                "add `fence_all AGENT ARGS` for a fence device (IPMI, PDU, hypervisor) to {}, or \
                 `fence_all /usr/sbin/{} wait=SECONDS` with lockmgrd --watchdog (docs/dlm.md)",
                paths.dlm_conf.display(),
                fencing::WATCHDOG_AGENT
            ),
        ));
        return;
    }
    let names: Vec<&str> = agents.iter().map(|a| a.agent.as_str()).collect();
    findings.push(Finding::ok(
        "fence method",
        format!("{}: {}", paths.dlm_conf.display(), names.join(", ")),
    ));
    // Self-fencing: what lockmgrd would refuse at start, checked against the running daemon.
    let watchdog_timeout = daemon.and_then(|d| {
        d.flag("--watchdog")?;
        Some(
            d.flag("--watchdog-timeout")
                .and_then(|t| t.parse().ok())
                .unwrap_or(10),
        )
    });
    let lock_failure_timeout = daemon
        .and_then(|d| d.flag("--lock-failure-timeout"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    let settings = fencing::SelfFenceSettings {
        watchdog_timeout,
        lock_failure_timeout,
    };
    let relies = match fencing::check_self_fencing(&paths.dlm_conf, &dlm_conf, settings) {
        Ok((relies, said)) => {
            if relies {
                findings.push(Finding::ok("self-fencing", said));
            }
            relies
        }
        Err(why) if daemon.is_some() => {
            findings.push(Finding::problem(
                "self-fencing",
                Severity::Error,
                why,
                "match lockmgrd's --watchdog flags and the agent's wait= on every node (docs/dlm.md)",
            ));
            true
        }
        // No daemon to compare with: the wait= and the flags are checked when it starts.
        Err(_) => agents
            .iter()
            .any(|a| a.agent.ends_with(fencing::WATCHDOG_AGENT)),
    };
    if !relies {
        return;
    }
    findings.push(if paths.watchdog.exists() {
        Finding::ok("watchdog", format!("{} exists", paths.watchdog.display()))
    } else {
        Finding::problem(
            "watchdog",
            Severity::Error,
            format!(
                "{} is missing, and the cluster fences with {}",
                paths.watchdog.display(),
                fencing::WATCHDOG_AGENT
            ),
            "load the board's watchdog driver (iTCO_wdt, ipmi_watchdog, i6300esb in a VM)",
        )
    });
    if let Some(info) = quorum {
        if let Err(why) = fencing::check_quorum_for_watchdog(&info) {
            findings.push(Finding::problem(
                "self-fencing",
                Severity::Error,
                why,
                "/etc/corosync/corosync.conf: a third node or a quorum device",
            ));
        }
    }
}

fn check_daemon(
    settings: &DlmPluginSettings,
    plugin_conf: &Path,
    daemon: Option<&RunningDaemon>,
    quorate: bool,
) -> Finding {
    let socket = &settings.socket_path;
    let start = format!(
        "start it before libvirtd: `lockmgrd --backend dlm --config {}` (or systemctl start \
         lockmgrd-dlm)",
        plugin_conf.display()
    );
    let reply = Client::connect(socket)
        .map_err(|e| e.to_string())
        .and_then(|mut client| client.call(&Request::Status).map_err(|e| e.to_string()));
    match reply {
        Ok(Reply::Status {
            backend,
            owners,
            locks,
            ..
        }) if backend == "dlm" => Finding::ok(
            "lockmgrd",
            format!(
                "answers on {} ({} domain(s), {} lock(s){})",
                socket.display(),
                owners.len(),
                locks.len(),
                daemon.map_or(String::new(), |d| format!(", pid {}", d.pid))
            ),
        ),
        Ok(Reply::Status { backend, .. }) => Finding::problem(
            "lockmgrd",
            Severity::Error,
            format!(
                "the daemon on {} serves the '{backend}' backend, not dlm: dlm.so and file.so \
                 share a socket",
                socket.display()
            ),
            format!(
                "give each plugin its own socket_path ({})",
                plugin_conf.display()
            ),
        ),
        Ok(other) => Finding::problem(
            "lockmgrd",
            Severity::Error,
            format!("unexpected answer on {}: {other:?}", socket.display()),
            start,
        ),
        Err(why) => Finding::problem(
            "lockmgrd",
            Severity::Error,
            format!(
                "no lockmgrd answers on {} (socket_path of {}): {why}{}",
                socket.display(),
                plugin_conf.display(),
                if quorate {
                    ""
                } else {
                    " (it may have refused to start: see its log)"
                }
            ),
            start,
        ),
    }
}

/// The findings as a human reads them.
pub fn render(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for finding in findings {
        let mark = match finding.severity {
            Severity::Ok => "✓",
            Severity::Warning => "!",
            Severity::Error => "✗",
        };
        out.push_str(&format!(
            "  {mark} {:<width$}  {}\n",
            finding.check, finding.detail
        ));
        if let Some(fix) = &finding.fix {
            out.push_str(&format!("    {:<width$}  fix: {fix}\n", ""));
        }
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    out.push_str(&match (errors, warnings) {
        (0, 0) => "ready: nothing to fix\n".to_owned(),
        (0, w) => format!("ready, with {w} warning(s)\n"),
        (e, w) => format!("NOT ready: {e} problem(s) to fix, {w} warning(s)\n"),
    });
    out
}
