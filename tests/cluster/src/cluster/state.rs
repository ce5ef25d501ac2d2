//! What a run dir records about a cluster ([`ClusterState`], `state.json`), and the clean-up
//! that works from it alone: teardown, `list`, `down` and the reaping of clusters whose owner
//! died.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::host;

use super::{DEFAULT_RUN_DIR, FenceMode};

/// The run dir root: `LOCKMGR_RUN_DIR` or [`DEFAULT_RUN_DIR`].
pub fn default_run_dir() -> PathBuf {
    std::env::var_os("LOCKMGR_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR))
}

/// What a run dir records about a cluster (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    /// Cluster name, also its network namespace: `lockmgr-<pid>-<n>`.
    pub name: String,
    /// The run dir of this cluster.
    pub dir: PathBuf,
    /// The process that tears it down (None: detached, `lockmgr-testbed down` stops it).
    pub owner_pid: Option<u32>,
    /// The owner's start time, against pid reuse.
    pub owner_start: Option<u64>,
    /// The shared host directory, if any.
    pub share: Option<PathBuf>,
    /// The kernel the nodes run.
    pub kernel: String,
    /// Whether the nodes run with power fencing (the host's fencer serves them).
    #[serde(default)]
    pub fencing: bool,
    /// How the nodes fence ([`ClusterSpec::fence_mode`]); missing in state files written before
    /// watchdog fencing existed: [`ClusterState::fence_mode`] then follows `fencing`.
    ///
    /// [`ClusterSpec::fence_mode`]: super::ClusterSpec::fence_mode
    #[serde(default)]
    pub fence_mode: Option<FenceMode>,
    /// The two-node tie-break in milliseconds (0 for other sizes; [`ClusterSpec::fence_tie_break`]).
    ///
    /// [`ClusterSpec::fence_tie_break`]: super::ClusterSpec::fence_tie_break
    #[serde(default)]
    pub fence_tie_break_ms: u64,
    /// The `lockmgr-testbed fencer` process serving a detached cluster's fence requests.
    #[serde(default)]
    pub fencer_pid: Option<u32>,
    /// Its start time, against pid reuse.
    #[serde(default)]
    pub fencer_start: Option<u64>,
    /// The nodes, node1 first.
    pub nodes: Vec<NodeRecord>,
}

/// One node of a [`ClusterState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    /// 1-based node number (= corosync nodeid).
    pub index: usize,
    /// QEMU's `-name`, checked in `/proc/PID/cmdline` before any signal.
    pub qemu_name: String,
    /// QEMU's pid once started.
    pub pid: Option<u32>,
    /// The node's address inside the namespace.
    pub address: Ipv4Addr,
    /// Its serial console log.
    pub console: PathBuf,
    /// Its guest agent socket.
    pub agent_socket: PathBuf,
    /// Its fence channel (a virtio-serial port in the node), when the cluster has fencing.
    #[serde(default)]
    pub fence_socket: Option<PathBuf>,
    /// Its QMP command socket (`query-status` while its vCPUs are frozen).
    #[serde(default)]
    pub qmp_socket: Option<PathBuf>,
    /// Its QMP event socket, held by the cluster's watchdog event listener.
    #[serde(default)]
    pub qmp_events: Option<PathBuf>,
    /// Set once it was powered off: by [`Cluster::kill_node`] or by a fence request.
    ///
    /// [`Cluster::kill_node`]: super::Cluster::kill_node
    pub killed: bool,
    /// The node whose fence request powered it off.
    #[serde(default)]
    pub fenced_by: Option<usize>,
    /// When its current QEMU was started (Unix seconds): a fence request about a failure before
    /// that is about an earlier incarnation, already gone.
    #[serde(default)]
    pub started_unix: Option<u64>,
}

impl ClusterState {
    /// How the nodes fence: the recorded mode, or (older state files) power when `fencing`.
    pub fn fence_mode(&self) -> FenceMode {
        self.fence_mode.unwrap_or(if self.fencing {
            FenceMode::Power
        } else {
            FenceMode::Off
        })
    }

    pub(crate) fn save(&self) -> Result<()> {
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        let text =
            serde_json::to_string_pretty(self).map_err(|err| Error::Usage(err.to_string()))?;
        fs::write(&tmp, text).at(&tmp, "write")?;
        fs::rename(&tmp, &path).at(&path, "replace")
    }

    /// Reads `DIR/state.json`.
    pub fn load(dir: &Path) -> Result<ClusterState> {
        let path = dir.join("state.json");
        let text = fs::read_to_string(&path).at(&path, "read")?;
        serde_json::from_str(&text)
            .map_err(|err| Error::Usage(format!("{}: {err}", path.display())))
    }

    /// Whether a live process owns it (false: detached, or its owner died).
    pub fn owner_alive(&self) -> bool {
        self.owner_pid
            .is_some_and(|pid| host::owner_alive(pid, self.owner_start))
    }

    /// Pids of its QEMUs that are still running.
    pub fn running_pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|node| {
                node.pid
                    .filter(|pid| host::alive(*pid) && host::is_our_qemu(*pid, &node.qemu_name))
            })
            .collect()
    }
}

pub(super) fn consoles_tail(state: &ClusterState, lines: usize) -> String {
    let mut text = String::new();
    for node in &state.nodes {
        text.push_str(&format!(
            "--- node{} console ({}), last {lines} lines ---\n{}\n",
            node.index,
            node.console.display(),
            host::tail(&node.console, lines)
        ));
    }
    text
}
/// Stops every recorded QEMU (SIGTERM, up to 5 s, then SIGKILL; each signal cmdline-checked),
/// deletes the namespace and the run dir. Returns what could not be done.
pub(crate) fn teardown(state: &ClusterState, keep_consoles: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(pid) = state.fencer_pid {
        // First, so that it kills no node while they go down.
        if let Err(problem) = host::stop_fencer(pid, state.fencer_start, &state.name) {
            problems.push(problem);
        }
    }
    let ours: Vec<(u32, &str)> = state
        .nodes
        .iter()
        .filter_map(|node| node.pid.map(|pid| (pid, node.qemu_name.as_str())))
        .collect();
    let signalled: Vec<u32> = ours
        .iter()
        .filter(|(pid, name)| host::signal_qemu(*pid, name, Signal::TERM))
        .map(|(pid, _)| *pid)
        .collect();
    let stubborn = host::wait_gone(&signalled, Duration::from_secs(5));
    // Killed earlier (kill_node) or died on their own: collect them if they are our children.
    ours.iter().for_each(|(pid, _)| host::reap(*pid));
    for pid in &stubborn {
        if let Some((_, name)) = ours.iter().find(|(candidate, _)| candidate == pid) {
            host::signal_qemu(*pid, name, Signal::KILL);
        }
    }
    for pid in host::wait_gone(&stubborn, Duration::from_secs(5)) {
        problems.push(format!("QEMU pid {pid} of {} survived SIGKILL", state.name));
    }
    host::reap_qemu_zombies();
    if Path::new("/run/netns").join(&state.name).exists() {
        if let Err(err) = host::run(Command::new("ip").args(["netns", "del", &state.name])) {
            problems.push(err.to_string());
        }
    }
    if keep_consoles {
        let keep = PathBuf::from("/var/tmp/lockmgr-testbed").join(&state.name);
        if fs::create_dir_all(&keep).is_ok() {
            for node in &state.nodes {
                let _ = fs::copy(
                    &node.console,
                    keep.join(format!("node{}.console", node.index)),
                );
            }
            let _ = fs::copy(
                state.dir.join(crate::fence::FENCE_LOG),
                keep.join(crate::fence::FENCE_LOG),
            );
            eprintln!(
                "[cluster] {}: consoles kept in {}",
                state.name,
                keep.display()
            );
        }
    }
    if let Err(err) = fs::remove_dir_all(&state.dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            problems.push(format!("{}: remove: {err}", state.dir.display()));
        }
    }
    problems
}

/// Whether the `lockmgr-testbed fencer` recorded for a detached cluster still runs.
pub fn fencer_alive(state: &ClusterState) -> bool {
    state
        .fencer_pid
        .is_some_and(|pid| host::is_our_fencer(pid, state.fencer_start, &state.name))
}

/// Every cluster recorded under `run_dir`.
pub fn list(run_dir: &Path) -> Vec<ClusterState> {
    let Ok(entries) = fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut all: Vec<ClusterState> = entries
        .filter_map(|entry| ClusterState::load(&entry.ok()?.path()).ok())
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Stops clusters recorded under `run_dir`: detached ones and those whose owner died; with
/// `force`, also those a live process owns. Returns one line per cluster handled.
pub fn down(run_dir: &Path, name: Option<&str>, force: bool) -> Vec<String> {
    let mut report = Vec::new();
    for state in list(run_dir) {
        if name.is_some_and(|name| name != state.name) {
            continue;
        }
        if state.owner_alive() && !force {
            report.push(format!(
                "{}: skipped, owned by live process {} (use --force to stop it anyway)",
                state.name,
                state.owner_pid.unwrap_or(0)
            ));
            continue;
        }
        let running = state.running_pids().len();
        let problems = teardown(&state, false);
        if problems.is_empty() {
            report.push(format!(
                "{}: stopped {running} QEMU process(es), namespace and run dir removed",
                state.name
            ));
        } else {
            report.push(format!("{}: {}", state.name, problems.join("; ")));
        }
    }
    // A run dir whose state.json is unreadable still may name a namespace.
    if let Ok(entries) = fs::read_dir(run_dir) {
        for entry in entries.flatten() {
            let dir = entry.path();
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            if name.is_some_and(|name| name != dir_name) || dir.join("state.json").exists() {
                continue;
            }
            if Path::new("/run/netns").join(&dir_name).exists() {
                let _ = host::run(Command::new("ip").args(["netns", "del", &dir_name]));
            }
            let _ = fs::remove_dir_all(&dir);
            report.push(format!("{dir_name}: removed a run dir without state"));
        }
    }
    report
}

/// Tears down clusters whose owning process is gone (a test killed before its Drop ran).
pub(super) fn reap_stale(run_dir: &Path) -> Vec<String> {
    list(run_dir)
        .into_iter()
        .filter(|state| state.owner_pid.is_some() && !state.owner_alive())
        .map(|state| {
            let problems = teardown(&state, false);
            format!(
                "reaped {} left by dead process {}: {:?}",
                state.name,
                state.owner_pid.unwrap_or(0),
                problems
            )
        })
        .collect()
}
